"""The search loop: ask → render → score → tell, until the budget is spent.

    result = search(strategy, scorer, renderer, target, Budget(evals=2000), callbacks=[...])

Everything is batched: one `ask()` is one population, rendered by one batched forward per text and
scored by one forward of each embedding model.
"""
from __future__ import annotations

import copy
import gc
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import SearchStopped, is_out_of_memory
from .renderer import Renderer, Renders
from .scorer import Scorer
from .strategy import Strategy
from .types import ScoreResult, TargetSpeech


@dataclass
class Budget:
    """Stop after whichever comes first; None = unlimited."""

    steps: int | None = None
    evals: int | None = None
    seconds: float | None = None

    def spent(self, p: "Progress") -> bool:
        return (
            (self.steps is not None and p.step >= self.steps)
            or (self.evals is not None and p.evals >= self.evals)
            or (self.seconds is not None and p.elapsed >= self.seconds)
        )


@dataclass
class Progress:
    """Where a search stands; all of it is saved in checkpoints."""

    step: int = 0
    evals: int = 0
    elapsed: float = 0.0
    best_score: float = -math.inf
    best_x: torch.Tensor | None = None
    best_pack: torch.Tensor | None = None
    best_parts: dict[str, float] = field(default_factory=dict)
    best_step: int = -1
    favorite_pack: torch.Tensor | None = None  # the strategy's own answer at the end (Strategy.favorite), if any
    favorite_score: float | None = None

    @property
    def voice(self) -> torch.Tensor | None:
        """The voice the search returns: the strategy's favorite where it named one, else the best scored voice."""
        return self.best_pack if self.favorite_pack is None else self.favorite_pack

    def update(self, x: torch.Tensor, packs: torch.Tensor, result: ScoreResult) -> bool:
        """Record a scored batch; True when it holds a new best."""
        self.step += 1
        self.evals += x.shape[0]
        self.favorite_pack = self.favorite_score = None  # searching on (a resume with more budget): asked again at the end
        i = int(result.total.argmax())
        score = float(result.total[i])
        if score > self.best_score:
            self.best_score, self.best_step = score, self.step
            self.best_x = x[i].detach().cpu().clone()
            self.best_pack = packs[i].detach().float().cpu().clone()
            self.best_parts = {k: float(v[i]) for k, v in result.parts.items()}
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


class StopSearch(Exception):
    """Raise from a callback to end the search early (it still counts as finished)."""


class Callback:
    """Hooks around the loop. Override what you need."""

    def on_start(self, search: "Search") -> None: ...
    def on_step(self, search: "Search", x: torch.Tensor, result: ScoreResult, improved: bool) -> None: ...
    def on_end(self, search: "Search", interrupted: bool) -> None: ...


class Search:
    """One search: the parts, the budget, and where it stands."""

    def __init__(self, strategy: Strategy, scorer: Scorer, renderer: Renderer, target: TargetSpeech,
                 budget: Budget, callbacks: list[Callback] | None = None, speed: float = 1.0):
        self.strategy, self.scorer, self.renderer, self.target = strategy, scorer, renderer, target
        self.budget, self.callbacks, self.speed = budget, list(callbacks or []), speed
        self.progress = Progress()
        self.texts = scorer.texts(target)
        self.target_state: Any = None
        self.last: ScoreResult | None = None

    _stop_requested = False
    stop_reason: str | None = None  # why the last run() ended early: interrupt, interrupt-mid-step, out-of-memory, exit, error
    mid_step = False  # True from ask() until the step's progress is recorded: the state is then past a boundary
    oom_retries = 2  # after the renderer's own halving reached one voice: retry the population, waiting between
    oom_wait = 2.0  # seconds before the first retry, doubled each time

    def _defer_sigint(self):
        """First Ctrl-C ends the search at the next step boundary (state stays consistent for a checkpoint);
        a second one stops at once, mid-step: what the step did is then dropped (see `mid_step`)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True

        previous = signal.signal(signal.SIGINT, handler)
        return lambda: signal.signal(signal.SIGINT, previous)

    def request_stop(self) -> None:
        """End the search at the next step boundary, as a first Ctrl-C does (callbacks and other threads may call it)."""
        self._stop_requested = True

    @property
    def stop_requested(self) -> bool:
        """Whether the search was asked to end at the next step boundary (`request_stop()` or Ctrl-C)."""
        return self._stop_requested

    def evaluate(self, x: torch.Tensor, grad: bool | None = None) -> tuple[torch.Tensor, ScoreResult]:
        """Render and score one population x (B, dim) of the strategy's space: (packs, result).

        With gradients (`result.grad`, d total / d x) when `grad` is True, or, left at None, when the strategy
        wants them. Outside `run()` too: the report and `--batch auto` score with it (set `target_state` first)."""
        space = self.strategy.space
        grad = bool(self.strategy.wants_grad if grad is None else grad)
        x = x.to(self.renderer.device, torch.float32)
        with torch.enable_grad() if grad else torch.no_grad():
            if grad:
                x = x.detach().requires_grad_(True)
            packs = space.to_packs(x)
            result = self.score_packs(packs, differentiable=grad)
            if grad:
                result.grad = torch.autograd.grad(result.total.sum(), x)[0]
        return packs.detach(), result.detach()

    def score_packs(self, packs: torch.Tensor, differentiable: bool = False) -> ScoreResult:
        """Render and score voice packs (B, 510, 256) as a step does (the search's scorer, texts, speed, target),
        without going through the space: e.g. the stock voices themselves. With autograd only if differentiable."""
        with torch.enable_grad() if differentiable else torch.no_grad():
            renders = Renders(self.renderer, packs.to(self.renderer.device), self.texts, speed=self.speed,
                              differentiable=differentiable)
            return self.scorer.score(renders, self.target_state)

    _population = 0  # the size of the last population asked (a strategy may ask more or fewer than batch_size)

    def _snapshot_if_last(self) -> dict[str, Any] | None:
        """The strategy's state when the next population may pass the evaluation budget (else None)."""
        if self.budget.evals is None:
            return None
        expected = max(self._population, int(getattr(self.strategy, "batch_size", 1)))
        if self.budget.evals - self.progress.evals >= expected:
            return None
        return copy.deepcopy(self.strategy.state_dict())

    def _evaluate_retrying(self, x: torch.Tensor) -> tuple[torch.Tensor, ScoreResult]:
        """`evaluate`, tried again after running out of memory (other processes may free theirs); then the error."""
        for attempt in range(self.oom_retries + 1):
            try:
                return self.evaluate(x)
            except Exception as e:
                if not is_out_of_memory(e) or attempt == self.oom_retries:
                    raise
            _free_memory(self.renderer.device)  # outside the except block: the failed attempt's tensors are gone
            time.sleep(self.oom_wait * 2**attempt)
        raise AssertionError("unreachable")

    def run(self) -> Progress:
        if self.target_state is None:
            self.target_state = self.scorer.prepare(self.target)
        for cb in self.callbacks:
            cb.on_start(self)
        self.stop_reason, self.mid_step = None, False  # a stop requested before run() (e.g. while loading) still counts
        failure: BaseException | None = None
        restore = self._defer_sigint()
        try:
            try:
                self._steps()
            except StopSearch:
                pass
            if self.stop_reason is None:  # ended by its budget, the strategy or a callback: not by a request
                self._take_favorite()
        except KeyboardInterrupt:
            self.stop_reason = "interrupt-mid-step" if self.mid_step else "interrupt"
        except SystemExit as e:  # plug-in code calling sys.exit must not end the process silently
            self.stop_reason = "exit"
            failure = SearchStopped(f"plug-in code called sys.exit({e.code!r})", self.progress.step)
        except Exception as e:
            if is_out_of_memory(e):
                self.stop_reason = "out-of-memory"
                failure = SearchStopped(f"out of memory, still after {self.oom_retries} retries and (on Kokoro) "
                                        f"down to one voice per forward ({_first_line(e)})", self.progress.step)
            else:
                self.stop_reason, failure = "error", e
        finally:
            restore()
        if failure is not None and self.stop_reason == "out-of-memory":
            _free_memory(self.renderer.device)
        try:
            self._end(self.stop_reason is not None)  # callbacks' on_end still see stop_requested
        finally:
            self._stop_requested = False  # answered: a later run() (resume in this process) starts clean
        if self.stop_reason in ("interrupt", "interrupt-mid-step"):
            raise KeyboardInterrupt
        if failure is not None:
            raise failure
        return self.progress

    def _steps(self) -> None:
        """Ask, evaluate, tell, record, until the budget is spent, the strategy is done or a stop is asked."""
        while not self.budget.spent(self.progress) and not self.strategy.done():
            if self._stop_requested:
                self.stop_reason = "interrupt"
                break
            t0 = time.perf_counter()
            self.mid_step = True
            before = self._snapshot_if_last()
            x = self.strategy.ask()
            room = None if self.budget.evals is None else self.budget.evals - self.progress.evals
            partial = before is not None and room < x.shape[0]
            if partial:  # the evaluation budget ends inside this population: score only what fits
                x = x[:room]
            if self.strategy.restarts_reference():
                self.scorer.reset_reference()
            packs, result = self._evaluate_retrying(x)
            if partial:
                # a population-based update must not see part of a population: the strategy goes back to before
                # it asked (the search ends here; `resume` with a larger budget asks again)
                self.strategy.load_state_dict(before)
            else:
                self.strategy.tell(x, _to_cpu(result))
            self._population = x.shape[0]
            self.progress.elapsed += time.perf_counter() - t0
            improved = self.progress.update(x, packs, result)
            self.mid_step = False
            self.last = result
            for cb in self.callbacks:
                cb.on_step(self, x, result, improved)

    def _take_favorite(self) -> None:
        """Ask the strategy for its answer (Strategy.favorite: e.g. a mean of its best chains rather than the one
        point that scored best), scoring what it needs outside the budget and without gradients."""
        x = self.strategy.favorite(lambda points: _to_cpu(self.evaluate(points, grad=False)[1]))
        if x is None:
            return
        packs, result = self.evaluate(x.reshape(1, -1), grad=False)
        self.progress.favorite_pack = packs[0].float().cpu().clone()
        self.progress.favorite_score = float(result.total[0])

    def _end(self, interrupted: bool) -> None:
        """Every callback's on_end runs (a progress bar must stop) even if one raises; the first error then."""
        first: BaseException | None = None
        for cb in self.callbacks:
            try:
                cb.on_end(self, interrupted)
            except BaseException as e:  # noqa: BLE001 - a second Ctrl-C while writing: re-raised below
                first = first or e
        if first is not None:
            raise first


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


def _free_memory(device: torch.device | str) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _to_cpu(result: ScoreResult) -> ScoreResult:
    return ScoreResult(
        result.total.float().cpu(),
        {k: v.float().cpu() for k, v in result.parts.items()},
        None if result.grad is None else result.grad.float().cpu(),
        None if result.embeddings is None else result.embeddings.float().cpu(),
    )


def search(strategy: Strategy, scorer: Scorer, renderer: Renderer, target: TargetSpeech, budget: Budget,
           callbacks: list[Callback] | None = None) -> Progress:
    """Run a search to the end of its budget and return where it stands (best voice in `best_pack`)."""
    return Search(strategy, scorer, renderer, target, budget, callbacks).run()
