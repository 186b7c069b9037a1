"""`--batch auto`: the population size that makes a search fastest on this machine.

On CUDA, populations of 8, 16, 32, ... 256 candidates are rendered and scored for real (the search's own
renderer, scorer and target text, stock voices as candidates; a warm-up, then the median of 2 timed
repetitions). Probing stops at the first size that does not fit (CUDA out-of-memory, or the renderer had
to split it into sub-batches) or that is not more than 5 % faster than the best smaller one; the choice
is the fastest size, a larger one winning only by more than 5 %. Elsewhere (CPU, MPS) a fixed 8 is used:
batching gains little there and probing would cost minutes.

The chosen number goes into the run's config (`batch_size`, with the trials under `batch_auto`), so a
resumed run uses exactly the same population.
"""
from __future__ import annotations

import copy
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from .errors import InputError
from .loop import Search

SIZES = (8, 16, 32, 64, 128, 256)
MAX_BATCH = 4096  # candidates per step: one population of 4096 full-space voices is already 2 GiB
CPU_BATCH = 8
MIN_GAIN = 0.05


class DoesNotFit(Exception):
    """A population size the device cannot take in one go."""


@dataclass
class Trial:
    batch: int
    evals_per_s: float | None = None
    failed: str | None = None  # why the size does not fit


@dataclass
class Choice:
    batch: int
    reason: str
    trials: list[Trial] = field(default_factory=list)

    def line(self) -> str:
        tried = ", ".join(f"{t.batch}: {t.evals_per_s:.1f}/s" if t.failed is None else f"{t.batch}: does not fit"
                          for t in self.trials)
        return f"--batch auto: population {self.batch} ({self.reason})" + (f"; evals/s by size {tried}" if tried else "")

    def record(self) -> dict[str, Any]:
        return {"chosen": self.batch, "reason": self.reason, "trials": [asdict(t) for t in self.trials]}


def parse_batch(value: str | int) -> int | str:
    """A `--batch` value: a positive integer or "auto"."""
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    try:
        number = int(text)
    except ValueError:
        raise InputError(f"--batch {value!r}: give a population size (a positive integer) or auto") from None
    if number < 1:
        raise InputError(f"--batch {value!r}: the population size must be at least 1")
    if number > MAX_BATCH:
        raise InputError(f"--batch {value!r}: at most {MAX_BATCH} candidates per step (or auto, the fastest size that fits)")
    return number


def choose(probe: Callable[[int], float], sizes: tuple[int, ...] = SIZES, min_gain: float = MIN_GAIN) -> Choice:
    """Probe increasing sizes (`probe(b)` -> evals/s, raising DoesNotFit) and pick the fastest (see module doc)."""
    trials: list[Trial] = []
    best: Trial | None = None
    reason = f"the largest size probed, {sizes[-1]}"
    for b in sizes:
        try:
            rate = float(probe(b))
        except DoesNotFit as why:
            trials.append(Trial(b, failed=str(why)))
            reason = f"{b} does not fit: {why}"
            break
        trials.append(Trial(b, round(rate, 3)))
        if best is None or rate > best.evals_per_s * (1 + min_gain):
            best = trials[-1]
            continue
        reason = f"{b} is not more than {min_gain:.0%} faster"
        break
    if best is None:
        raise InputError(f"--batch auto: even a population of {sizes[0]} does not fit on this device "
                         f"({trials[0].failed}); give a smaller --batch")
    return Choice(best.batch, reason, trials)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PopulationProbe:
    """`probe(b)`: evals/s of rendering and scoring b candidates, as one step of the search would
    (`Search.evaluate` on the stock voices' coordinates, with gradients when `wants_grad`).

    The scorer's running state (e.g. the hybrid's early-exit threshold) is put back after every call, so
    each call does the full work (no candidate is skipped) and the search starts as if never probed.
    """

    def __init__(self, search: Search, *, wants_grad: bool = False, repeats: int = 2):
        self.search, self.wants_grad, self.repeats = search, wants_grad, repeats
        self.renderer, self.scorer, self.stock = search.renderer, search.scorer, search.strategy.stock
        if search.target_state is None:
            search.target_state = search.scorer.prepare(search.target)
        self.saved = copy.deepcopy(self.scorer.state_dict())

    def _step(self, x: torch.Tensor) -> None:
        self.search.evaluate(x, grad=self.wants_grad)
        self.scorer.load_state_dict(copy.deepcopy(self.saved))

    def __call__(self, batch: int) -> float:
        device = self.renderer.device
        with torch.no_grad():
            x = self.search.strategy.space.from_packs(self.stock.packs[torch.arange(batch) % len(self.stock)])
        retries = getattr(self.renderer, "oom_retries", 0)
        max_batch = getattr(self.renderer, "max_batch", None)
        if max_batch is not None:
            self.renderer.max_batch = max(max_batch, batch)  # one forward per text, as the search will run it
        times, out_of_memory = [], False
        try:
            for i in range(self.repeats + 1):  # the first is a warm-up (kernel choice, allocator growth)
                _sync(device)
                start = time.perf_counter()
                self._step(x)
                _sync(device)
                if i:
                    times.append(time.perf_counter() - start)
        except torch.cuda.OutOfMemoryError:
            out_of_memory = True
        finally:
            self.scorer.load_state_dict(copy.deepcopy(self.saved))
            if max_batch is not None:
                self.renderer.max_batch = max_batch
        if out_of_memory:  # outside the except block, so the failed attempt's tensors are freed
            torch.cuda.empty_cache()
            raise DoesNotFit("CUDA out of memory")
        if getattr(self.renderer, "oom_retries", 0) > retries:
            raise DoesNotFit("the renderer split it into sub-batches after running out of memory")
        return batch / statistics.median(times)


def auto_batch(parts: Any, probe: Callable[[int], float] | None = None, sizes: tuple[int, ...] = SIZES) -> Choice:
    """The population for a built search (`session.Parts`): probed on CUDA, CPU_BATCH elsewhere.

    `probe` replaces the real one (tests); with it, the probing path runs whatever the device.
    """
    if probe is None and parts.renderer.device.type != "cuda":
        return Choice(CPU_BATCH, f"fixed on {parts.renderer.device.type}: no probing off CUDA")
    if probe is None:
        probe = PopulationProbe(parts.search, wants_grad=parts.search.strategy.may_want_grad())
    return choose(probe, sizes)


def resolve(config: dict[str, Any], probe: Callable[[int], float] | None = None,
            sizes: tuple[int, ...] = SIZES) -> tuple[dict[str, Any], Any, Choice]:
    """A config whose `batch_size` is "auto" made concrete: (config, built parts or None, choice).

    On CUDA (or with an injected `probe`) the search is built once to probe with its real parts, then built
    again with the chosen population (reusing the loaded renderer and target), so the run that follows is the
    very run `--batch N` would make. The returned parts are None when nothing had to be built.
    """
    from .session import build, resolve_device

    config = copy.deepcopy(config)
    device = resolve_device(config["device"])
    if probe is None and not device.startswith("cuda"):
        choice = Choice(CPU_BATCH, f"fixed on {device}: probing is for CUDA")
        parts = None
    else:
        config["batch_size"] = sizes[0]  # a placeholder: the probe renders and scores, it does not ask the strategy
        probed = build(config)
        choice = auto_batch(probed, probe, sizes)
        renderer = probed.renderer
        if getattr(renderer, "max_batch", choice.batch) < choice.batch:  # one forward per text, as probed
            renderer.max_batch = choice.batch
            config["renderer"]["options"]["max_batch"] = choice.batch
        config["batch_size"], config["batch_auto"] = choice.batch, choice.record()
        parts = build(config, renderer=renderer, target=probed.target)
        return parts.config, parts, choice
    config["batch_size"], config["batch_auto"] = choice.batch, choice.record()
    return config, parts, choice
