"""Strategies in sequence: `chain:interpolate>cma-es>gradient` (or `--strategy-opt stages=...`).

Stages are separated by '>' (quote it in a shell) or '+' (`chain:interpolate+random-walk`).

Each stage runs until its `done()` or until it has used its share of steps (`steps=20,100,50`; an
empty entry or 0 means "until done"; the last stage runs until the search budget ends). The next stage
then starts from the best points so far: `warm_start(points, scores)` with the stage's own hand-off
(interpolate hands over its best point per voice) or else the chain's best points (top `keep`,
best first). Stage options are given with the stage name or 1-based position as prefix:
`--strategy-opt cma-es.sigma0=0.2 --strategy-opt 3.lr=0.02`.

The chain's state is the stage index, the steps used in it, its best points, and the current stage's
own state: a resume continues inside the same stage.
"""
from __future__ import annotations

import re
from typing import Any

import torch

from voicesearch import registry
from voicesearch.errors import InputError
from voicesearch.space import SearchSpace
from voicesearch.stock import StockVoices
from voicesearch.strategy import Strategy
from voicesearch.types import ScoreResult

from .common import opt_number


def _key(name: str) -> str:
    return name.replace("-", "_").lower()


class Chain(Strategy):
    """Stages in sequence (`chain:interpolate>cma-es>gradient`), each handing its best points to the next."""

    wants_grad = None  # depends on the stages; an instance follows its current stage (set after every ask)

    def __init__(self, space: SearchSpace, stock: StockVoices, rng: torch.Generator, batch_size: int = 16,
                 variant: Any = None, stages: Any = None, steps: Any = None, keep: Any = 16, **options: Any):
        spec = stages if stages not in (None, "") else variant
        if not spec:
            raise InputError("chain needs its stages: use chain:interpolate>cma-es or --strategy-opt stages=a>b")
        names = [n.strip() for n in re.split(r"[>+]", str(spec)) if n.strip()]
        if len(names) < 1 or "chain" in names:
            raise InputError(f"chain stages {spec!r}: give one or more strategy names separated by '>' (or '+')")
        limits = [str(v).strip() for v in (steps if isinstance(steps, (list, tuple)) else str(steps).split(","))] \
            if steps not in (None, "") else []
        if len(limits) > len(names):
            raise InputError(f"chain: {len(limits)} step shares for {len(names)} stages; give one per stage")
        self.limits = [opt_number(v, "steps", int, 0) if v not in ("", "-") else 0 for v in limits]
        self.limits += [0] * (len(names) - len(self.limits))
        stage_options: list[dict[str, Any]] = [{} for _ in names]
        for key, value in options.items():
            prefix, _, option = key.partition(".")
            matches = [i for i, n in enumerate(names) if _key(n) == _key(prefix) or str(i + 1) == prefix]
            if not option or not matches:
                raise InputError(f"chain option {key!r}: prefix it with a stage name or position, e.g. "
                                 f"{_key(names[0])}.{key} (stages: {', '.join(names)})")
            for i in matches:
                stage_options[i][option] = value
        super().__init__(space, stock, rng, batch_size)
        self.names = names
        self.keep = opt_number(keep, "keep", int, 1)
        self.stages = [registry.get("strategies", n)(space=space, stock=stock, rng=rng, batch_size=batch_size, **o)
                       for n, o in zip(names, stage_options)]
        for name, stage, limit in zip(names[:-1], self.stages[:-1], self.limits[:-1]):
            if not limit and type(stage).done is Strategy.done and type(stage).stop is Strategy.stop:
                raise InputError(f"chain: stage {name!r} never ends by itself; give it a share of steps (steps=...)")
        self.index = 0
        self.stage_steps = 0
        self.top_x = torch.zeros(0, space.dim)
        self.top_scores = torch.zeros(0)
        self.wants_grad = bool(self.stage.wants_grad)

    @classmethod
    def space_for(cls, options: dict[str, Any]) -> str:
        """pca when any stage works best there (cma-es, gradient, ...); full for KVoiceWalk's interpolate>random-walk."""
        spec = options.get("stages") or options.get("variant") or ""
        names = [n.strip() for n in re.split(r"[>+]", str(spec)) if n.strip() and n.strip() != "chain"]
        return "pca" if any(registry.auto_space(n, {}) == "pca" for n in names) else "full"

    @property
    def stage(self) -> Strategy:
        return self.stages[self.index]

    def restarts_reference(self) -> bool:
        return self.stage.restarts_reference()

    def favorite(self, evaluate: Any) -> torch.Tensor | None:
        return self.stage.favorite(evaluate)

    def may_want_grad(self) -> bool:
        return any(stage.may_want_grad() for stage in self.stages)

    def known_stock_scores(self) -> torch.Tensor | None:
        """The first stage's ranking of the stock voices (the stages share the chain's stock)."""
        for stage in self.stages:
            scores = stage.known_stock_scores()
            if scores is not None:
                return scores
        return None

    def _stage_over(self) -> str | None:
        """Why the current stage ends (its own reason, or its share of steps used), or None."""
        name, limit = self.names[self.index], self.limits[self.index]
        if self.stage.done():
            return f"{name}: {self.stage.stop() or 'done'}"
        return f"{name} used its {limit} steps" if limit > 0 and self.stage_steps >= limit else None

    def _advance(self) -> None:
        handoff = self.stage.handoff()
        points, scores = handoff if handoff is not None else (self.top_x, self.top_scores)
        self.index += 1
        self.stage_steps = 0
        if points.shape[0]:
            self.stage.warm_start(points, scores)  # a stage that takes no warm start opens as it would alone

    def warm_start(self, points: torch.Tensor, scores: torch.Tensor) -> bool:
        return self.stages[0].warm_start(points, scores)

    def ask(self) -> torch.Tensor:
        while self.index < len(self.stages) - 1 and self._stage_over():
            self._advance()
        x = self.stage.ask()
        self.wants_grad = bool(self.stage.wants_grad)  # the loop reads it after ask(): follow the current stage
        return x

    def tell(self, x: torch.Tensor, result: ScoreResult) -> None:
        self.stage.tell(x, result)
        self.stage_steps += 1
        points = torch.cat([self.top_x, x.detach().float().cpu()])
        scores = torch.cat([self.top_scores, result.total.detach().float().cpu()])
        order = torch.argsort(-scores, stable=True)[: self.keep]
        self.top_x, self.top_scores = points[order], scores[order]

    def stop(self) -> str | None:
        return self._stage_over() if self.index == len(self.stages) - 1 else None

    def state_dict(self) -> dict[str, Any]:
        return {"index": self.index, "stage_steps": self.stage_steps, "top_x": self.top_x,
                "top_scores": self.top_scores, "names": list(self.names), "stage": self.stage.state_dict(),
                "rng": self.rng.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["names"]) != self.names:
            raise InputError(f"the checkpoint's chain was {'>'.join(state['names'])}, not {'>'.join(self.names)}")
        self.index, self.stage_steps = int(state["index"]), int(state["stage_steps"])
        self.top_x, self.top_scores = state["top_x"].clone(), state["top_scores"].clone()
        self.stage.load_state_dict(state["stage"])
        self.rng.set_state(state["rng"])
