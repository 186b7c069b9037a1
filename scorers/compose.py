"""Composition of scorers by a small formula: `--scorer "compose:0.7*resemblyzer+0.3*ecapa"`.

Grammar (whitespace ignored):
    formula := term ('+' term)*
    term    := [number '*'] factor
    factor  := NAME | 'hmean(' formula_list ')' | 'floor(' factor ',' number ')' | '(' formula ')'
NAME is any registered scorer (built-in, third-party or registered in-process), variants included
(`nevergrad`-style `name:variant` is not needed for scorers but allowed).

- `0.7*a+0.3*b`          weighted sum of totals;
- `hmean(a,b)`           harmonic mean of totals (weights allowed inside: `hmean(2*a,b)`);
- `floor(dnsmos,3.0)`    quality floor: 0 while the total is ≥ 3.0, else (total - 3.0), a penalty.

Every named scorer is built once (through `voicesearch.registry.get("scorers", name)`, with `device`),
prepared once, and scored on the same `Renders`: their texts are united (identical texts rendered once)
and each sub-scorer sees its own text indices. Parts: each sub-scorer's total under its name and its
own parts as `name/part`. Differentiable when every sub-scorer is.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from voicesearch import registry
from voicesearch.errors import InputError
from voicesearch.renderer import Renders
from voicesearch.scorer import Scorer
from voicesearch.types import AudioBatch, ScoreResult, TargetSpeech

_TOKEN = re.compile(r"\s*(?:(?P<num>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_][\w.\-:]*)|(?P<op>[-+*(),]))")


# -- formula tree ------------------------------------------------------------------------------
@dataclass
class Leaf:
    name: str


@dataclass
class Sum:
    terms: list[tuple[float, Any]]


@dataclass
class HMean:
    terms: list[tuple[float, Any]]


@dataclass
class Floor:
    child: Any
    threshold: float


@dataclass
class _Parser:
    text: str
    tokens: list[tuple[str, str]] = field(default_factory=list)
    pos: int = 0

    def __post_init__(self) -> None:
        i, text = 0, self.text.strip()
        while i < len(text):
            m = _TOKEN.match(text, i)
            if not m or m.end() == i:
                raise self.error(f"unexpected {text[i:i + 10]!r}")
            kind = m.lastgroup
            self.tokens.append((kind, m.group(kind)))
            i = m.end()
            while i < len(text) and text[i].isspace():
                i += 1

    def error(self, what: str) -> InputError:
        return InputError(f"scorer formula {self.text!r}: {what}; write e.g. 0.7*resemblyzer+0.3*ecapa, "
                          "hmean(resemblyzer,ecapa) or resemblyzer+floor(dnsmos,3.0)")

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value) or (kind is not None and tok[0] != kind):
            want = value or kind
            raise self.error(f"expected {want!r} but found {tok[1] if tok else 'the end'!r}")
        self.pos += 1
        return tok[1]

    def parse(self) -> Any:
        if not self.tokens:
            raise self.error("it is empty")
        tree = self.formula()
        if self.peek() is not None:
            raise self.error(f"unexpected {self.peek()[1]!r}")
        return tree

    def formula(self) -> Any:
        terms = [self.term()]
        while self.peek() and self.peek()[1] in "+-":
            sign = -1.0 if self.take() == "-" else 1.0
            w, f = self.term()
            terms.append((sign * w, f))
        return terms[0][1] if len(terms) == 1 and terms[0][0] == 1.0 else Sum(terms)

    def term(self) -> tuple[float, Any]:
        weight = 1.0
        if self.peek() and self.peek()[0] == "num":
            weight = float(self.take())
            self.take("*")
        return weight, self.factor()

    def factor(self) -> Any:
        tok = self.peek()
        if tok is None:
            raise self.error("it ends too early")
        if tok[1] == "(":
            self.take("(")
            inner = self.formula()
            self.take(")")
            return inner
        name = self.take(kind="name")
        if name == "hmean" and self.peek() == ("op", "("):
            self.take("(")
            terms = [self.term()]
            while self.peek() == ("op", ","):
                self.take(",")
                terms.append(self.term())
            self.take(")")
            if any(w <= 0 for w, _ in terms):
                raise self.error("hmean weights must be positive")
            return HMean(terms)
        if name == "floor" and self.peek() == ("op", "("):
            self.take("(")
            child = self.formula()
            self.take(",")
            threshold = float(self.take(kind="num"))
            self.take(")")
            return Floor(child, threshold)
        return Leaf(name)


def parse_formula(text: str) -> Any:
    """The formula's tree (Leaf / Sum / HMean / Floor); InputError with a hint when malformed."""
    return _Parser(text).parse()


def leaves(tree: Any) -> list[str]:
    """Scorer names in order of first appearance."""
    if isinstance(tree, Leaf):
        return [tree.name]
    children = [tree.child] if isinstance(tree, Floor) else [c for _, c in tree.terms]
    out: list[str] = []
    for child in children:
        out += [n for n in leaves(child) if n not in out]
    return out


def evaluate_formula(tree: Any, totals: dict[str, torch.Tensor]) -> torch.Tensor:
    if isinstance(tree, Leaf):
        return totals[tree.name]
    if isinstance(tree, Floor):
        return (evaluate_formula(tree.child, totals) - tree.threshold).clamp_max(0.0)
    values = [(w, evaluate_formula(c, totals)) for w, c in tree.terms]
    if isinstance(tree, Sum):
        return sum(w * v for w, v in values)
    return sum(w for w, _ in values) / sum(w / v for w, v in values)


# -- renders seen through a sub-scorer's own text numbering -------------------------------------
class RemappedRenders:
    """A `Renders` whose text i is the parent's text `mapping[i]` (renders and caches are shared)."""

    def __init__(self, parent: Renders, mapping: list[int]):
        self.parent, self.mapping = parent, mapping
        self.texts = [parent.texts[j] for j in mapping]

    def __len__(self) -> int:
        return len(self.parent)

    def __getattr__(self, name: str) -> Any:  # packs, renderer, speed, differentiable, rendered_items
        return getattr(self.parent, name)

    def audio(self, text: int = 0, sample_rate: int | None = None, index: torch.Tensor | None = None) -> AudioBatch:
        return self.parent.audio(self.mapping[text], sample_rate=sample_rate, index=index)


class ComposedScorer(Scorer):
    """Scorers combined by a formula: 0.7*resemblyzer+0.3*ecapa, hmean(a,b), a+floor(dnsmos,3.0).

    Give the formula as the variant (`--scorer "compose:0.7*resemblyzer+0.3*ecapa"`) or `formula=`.
    Sub-scorer options: `name.option=value` (`--scorer-opt resemblyzer.vad=none`) or `options={"ecapa": {...}}`.
    """

    name: ClassVar[str] = "compose"

    def __init__(self, device: str | torch.device = "cpu", variant: str | None = None, formula: str | None = None,
                 options: dict[str, dict[str, Any]] | None = None, **extra: Any):
        spec = formula or variant
        if not spec:
            raise InputError("compose needs a formula: --scorer 'compose:0.7*resemblyzer+0.3*ecapa'")
        self.formula = spec
        self.tree = parse_formula(spec)
        options = {k: dict(v) for k, v in (options or {}).items()}
        for key in [k for k in extra if "." in k]:  # --scorer-opt resemblyzer.vad=none
            name, option = key.split(".", 1)
            match = [n for n in leaves(self.tree) if n.replace("-", "_") == name.replace("-", "_")]
            if not match:
                raise InputError(f"compose option {key!r} names no scorer of the formula {spec!r}")
            options.setdefault(match[0], {})[option] = extra.pop(key)
        super().__init__(device=device, **extra)
        self.scorers: dict[str, Scorer] = {}
        for name in leaves(self.tree):
            if name == "compose" or name.startswith("compose:"):
                raise InputError("compose formulas cannot nest compose; write the whole formula in one")
            self.scorers[name] = registry.get("scorers", name)(device=device, **options.get(name, {}))
        self.differentiable = all(s.differentiable for s in self.scorers.values())  # type: ignore[misc]
        self.text_independent = all(s.text_independent for s in self.scorers.values())  # type: ignore[misc]
        self._mappings: dict[str, list[int]] = {}

    @staticmethod
    def component_names(formula: str) -> list[str]:
        """The scorer names a formula uses (tools ask it without building the scorers, e.g. voicesearch.cpu)."""
        return leaves(parse_formula(formula)) if formula else []

    def texts(self, target: TargetSpeech) -> list[str]:
        union: list[str] = []
        for name, scorer in self.scorers.items():
            mapping = []
            for text in scorer.texts(target):
                if text not in union:
                    union.append(text)
                mapping.append(union.index(text))
            self._mappings[name] = mapping
        return union

    def prepare(self, target: TargetSpeech) -> dict[str, Any]:
        self.texts(target)
        return {name: scorer.prepare(target) for name, scorer in self.scorers.items()}

    def score(self, renders: Renders, state: dict[str, Any]) -> ScoreResult:
        totals: dict[str, torch.Tensor] = {}
        parts: dict[str, torch.Tensor] = {}
        embeddings = None
        for name, scorer in self.scorers.items():
            result = scorer.score(RemappedRenders(renders, self._mappings[name]), state[name])
            totals[name] = result.total.to(self.device).float()
            parts[name] = totals[name]
            for key, value in result.parts.items():
                parts[f"{name}/{key}"] = value.to(self.device)
            if embeddings is None:
                embeddings = result.embeddings
        return ScoreResult(total=evaluate_formula(self.tree, totals), parts=parts, embeddings=embeddings)

    def reset_reference(self) -> None:
        for scorer in self.scorers.values():
            scorer.reset_reference()

    def state_dict(self) -> dict[str, Any]:
        return {name: scorer.state_dict() for name, scorer in self.scorers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, scorer in self.scorers.items():
            if name in state:
                scorer.load_state_dict(state[name])
