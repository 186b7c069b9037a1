"""The CPU path: defaults that let a clone finish in minutes where Kokoro runs on the CPU (issue #15).

GPU defaults are `session.DEFAULTS` and the CLI's own; this module only decides what a CPU run uses for the options
the user left unset, and says so in one line. Measured in `benchmarks/cpu_clone.py` (docs/cpu.md):

- renderer `kokoro-onnx`: the int8 ONNX on onnxruntime, one utterance per core at once (`workers=auto`); per voice
  it takes less CPU time than the torch renderer and loads in seconds. Kept on `kokoro` when the strategy needs
  gradients or a torch-only option (--precision, --compile, hub or .pth weights) was given.
- `score_seconds`: while scored, candidates speak only the first ~5 s of the transcript (cut at a clause), for
  scorers whose score does not depend on the words (speaker embeddings: `Scorer.text_independent`). Render time
  grows with the audio; a speaker embedding needs a few seconds. The report still renders the whole transcript.
- `stock_langs`: only the stock voices of the text's language are ranked and searched (English: a*, b*).
- population 8; with no budget given, `CPU_SEARCH_SECONDS` of search.
- `report_live_audio: false`: no render of the best voice at checkpoints (the report gets its audio at the end).
"""
from __future__ import annotations

import os
import re
from typing import Any

from . import registry
from .errors import InputError

CPU_BATCH = 8
CPU_SEARCH_SECONDS = 420.0  # 7 minutes of search: with model load and the final report, a clone in <= 10 min
#: Where a budget must count evaluations (the web app's box, progress and Resume): about what CPU_SEARCH_SECONDS buys
#: on an idle 2-core machine. A default CPU clone costs ~5.6 CPU-s per evaluation on both cores (246.6 CPU-s for 44
#: evaluations in benchmarks/results/cpu_clone.json): 420 s / 2.8 s = 150 (28 of them rank the English stock voices).
CPU_EVALS = 150
SCORE_SECONDS = 5.0
CHARS_PER_SECOND = 16.0  # Kokoro at speed 1 on English (example transcript: 250 characters, 13.7 s; 109 -> 6.7 s)
#: On a GPU: gradient ascent (strategy auto) on ECAPA + Resemblyzer together, candidates scored on ~5 s of the
#: transcript, 768 evaluations; the gradient strategy answers with the mean of its 4 best chains. Measured in
#: benchmarks/clone_quality.py (docs/quality.md), 9 real speakers judged by CAM++, which the search never hears:
#: mean closure 53 %, none below the best stock voice, DNSMOS 3.40 (stock 3.42). Two embedders as the objective
#: leave less to win from what only one of them hears (ECAPA alone: 47 %); the 5-s cut halves an evaluation's cost.
GPU_DEFAULTS = {"renderer": "kokoro", "batch_size": 16, "budget": {"steps": None, "evals": 768, "seconds": None},
                "scorer": "compose:ecapa+resemblyzer", "score_seconds": SCORE_SECONDS}
ENGLISH = ("a", "b")
_KOKORO_NAME = re.compile(r"^[a-z][fm]_")  # Kokoro's stock names: language letter, gender letter, underscore


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's share), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def needs_gradients(strategy: str) -> bool:
    """Whether a strategy (a registry name; `auto` on a CPU is cma-es) renders with autograd at some point."""
    if strategy == "auto":
        return False
    cls = registry.get("strategies", strategy)
    base = getattr(cls, "func", cls)
    wants = getattr(base, "wants_grad", False)
    if isinstance(wants, bool):
        return wants
    stages = str(getattr(cls, "keywords", {}).get("variant") or "")  # a chain follows its stages
    return any(needs_gradients(n.strip()) for n in re.split(r"[>+]", stages) if n.strip()) if stages else True


def text_independent(scorer: str) -> bool:
    """Whether a scorer (a registry name) says its score does not depend on the words the candidates speak."""
    cls = registry.get("scorers", scorer)
    base = getattr(cls, "func", cls)
    parts = getattr(base, "component_names", None)  # a formula of scorers (compose): all of its scorers must be
    if callable(parts):
        names = parts(scorer.split(":", 1)[1] if ":" in scorer else "")
        return bool(names) and all(text_independent(n) for n in names)
    return getattr(base, "text_independent", False) is True


def resolve_defaults(config: dict[str, Any], given: set[str], device: str) -> str | None:
    """Fill, in `config`, the options the user did not give (`given` holds the keys they did: renderer, scorer,
    batch_size, budget, score_seconds, stock_langs, torch_renderer) for this device; on a CPU a line saying what
    was chosen, else None."""
    cpu = device == "cpu"
    notes = []
    if "renderer" not in given:
        onnx = cpu and "torch_renderer" not in given and not needs_gradients(config["strategy"]["name"])
        config["renderer"] = {"name": "kokoro-onnx", "options": {"workers": "auto"}} if onnx else \
            {"name": GPU_DEFAULTS["renderer"], "options": config["renderer"].get("options", {})}
        if onnx:
            notes.append(f"kokoro-onnx int8 renderer on {usable_cores()} cores")
    if "batch_size" not in given:
        config["batch_size"] = CPU_BATCH if cpu else GPU_DEFAULTS["batch_size"]
        if cpu:
            notes.append(f"population {CPU_BATCH}")
    if "budget" not in given:
        config["budget"] = {"steps": None, "evals": None, "seconds": CPU_SEARCH_SECONDS} if cpu else dict(GPU_DEFAULTS["budget"])
        if cpu:
            notes.append(f"{CPU_SEARCH_SECONDS / 60:g} min of search")
    if not cpu:
        if "scorer" not in given:
            config["scorer"] = {"name": GPU_DEFAULTS["scorer"], "options": config["scorer"].get("options", {})}
        if "score_seconds" not in given and text_independent(config["scorer"]["name"]):
            config["score_seconds"] = GPU_DEFAULTS["score_seconds"]
        return None
    if "score_seconds" not in given and text_independent(config["scorer"]["name"]):
        config["score_seconds"] = SCORE_SECONDS
        notes.append(f"candidates scored on the first ~{SCORE_SECONDS:g} s of the transcript")
    if "stock_langs" not in given:
        lang = str(config["renderer"].get("options", {}).get("lang", "a"))[:1].lower() or "a"
        config["stock_langs"] = list(ENGLISH) if lang in ENGLISH else [lang]
        notes.append("English stock voices" if lang in ENGLISH else f"stock voices of language {lang!r}")
    config["report_live_audio"] = False
    return ("CPU defaults: " + ", ".join(notes) + " (set --renderer, --batch, --evals/--seconds, --score-seconds, "
            "--all-voices to choose yourself)") if notes else None


def stock_filter(config: dict[str, Any]):
    """`keep(name)` for the config's `stock_langs` (None when all voices are kept). Names that are not Kokoro's
    (`xf_name`) are always kept; when no voice is of those languages, all are (see `filter_stock`)."""
    langs = config.get("stock_langs")
    if not langs:
        return None
    if not isinstance(langs, list) or not all(isinstance(x, str) and len(x) == 1 for x in langs):
        raise InputError(f"stock_langs must be a list of Kokoro language letters such as [\"a\", \"b\"] (got {langs!r})")
    return lambda name: not _KOKORO_NAME.match(name) or name[0] in langs


def filter_stock(stock: Any, config: dict[str, Any]) -> Any:
    """The stock voices of the config's languages; all of them if none is (e.g. only the bundled Japanese voices)."""
    keep = stock_filter(config)
    if keep is None or not any(keep(n) and _KOKORO_NAME.match(n) for n in stock.names):
        return stock
    return stock.subset(keep)


def leading_text(text: str, seconds: float, chars_per_second: float = CHARS_PER_SECOND) -> str:
    """The start of `text` that Kokoro speaks in about `seconds` (at least that, up to 1.5x to end at a clause);
    the whole text when it is not much longer."""
    text = " ".join(text.split())
    limit = max(1, int(seconds * chars_per_second))
    if len(text) <= 1.3 * limit:
        return text
    marks = [m.end() for m in re.finditer(r"[.,;:!?](\s|$)", text) if limit <= m.end() <= 1.5 * limit]
    if marks:
        return text[: marks[0]].strip()
    cut = text[:limit]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).strip()


def score_texts(texts: list[str], scorer: Any, seconds: float | None) -> list[str]:
    """The texts candidates speak while scored: each cut to ~`seconds` when the scorer allows it."""
    if not seconds:
        return texts
    if not (isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and 0 < seconds <= 600):
        raise InputError(f"score_seconds must be a number of seconds above 0 (got {seconds!r})")
    if not getattr(scorer, "text_independent", False):
        raise InputError(f"scorer {getattr(scorer, 'name', '') or type(scorer).__name__} compares the words spoken: "
                         "--score-seconds applies to speaker-embedding scorers (resemblyzer, ecapa, wavlm) only")
    return [leading_text(t, float(seconds)) for t in texts]
