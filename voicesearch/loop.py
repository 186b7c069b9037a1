"""The search loop: ask → render → score → tell, until the budget is spent.

    result = search(strategy, scorer, renderer, target, Budget(evals=2000), callbacks=[...])

Everything is batched: one `ask()` is one population, rendered by one batched forward per text and
scored by one forward of each embedding model.
"""
from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch

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

    def update(self, x: torch.Tensor, packs: torch.Tensor, result: ScoreResult) -> bool:
        """Record a scored batch; True when it holds a new best."""
        self.step += 1
        self.evals += x.shape[0]
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

    def _defer_sigint(self):
        """First Ctrl-C ends the search at the next step boundary (state stays consistent for a checkpoint)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True

        previous = signal.signal(signal.SIGINT, handler)
        return lambda: signal.signal(signal.SIGINT, previous)

    def evaluate(self, x: torch.Tensor) -> tuple[torch.Tensor, ScoreResult]:
        """Render and score one population; with gradients when the strategy wants them."""
        space, grad = self.strategy.space, self.strategy.wants_grad
        x = x.to(self.renderer.device, torch.float32)
        with torch.enable_grad() if grad else torch.no_grad():
            if grad:
                x = x.detach().requires_grad_(True)
            packs = space.to_packs(x)
            renders = Renders(self.renderer, packs, self.texts, speed=self.speed, differentiable=grad)
            result = self.scorer.score(renders, self.target_state)
            if grad:
                result.grad = torch.autograd.grad(result.total.sum(), x)[0]
        return packs.detach(), result.detach()

    def run(self) -> Progress:
        if self.target_state is None:
            self.target_state = self.scorer.prepare(self.target)
        for cb in self.callbacks:
            cb.on_start(self)
        interrupted = False
        restore = self._defer_sigint()
        try:
            while not self.budget.spent(self.progress) and not self.strategy.done():
                if self._stop_requested:
                    interrupted = True
                    break
                t0 = time.perf_counter()
                x = self.strategy.ask()
                if self.strategy.restarts_reference():
                    self.scorer.reset_reference()
                packs, result = self.evaluate(x)
                self.strategy.tell(x, _to_cpu(result))
                self.progress.elapsed += time.perf_counter() - t0
                improved = self.progress.update(x, packs, result)
                self.last = result
                for cb in self.callbacks:
                    cb.on_step(self, x, result, improved)
        except StopSearch:
            pass
        except KeyboardInterrupt:
            interrupted = True
        finally:
            restore()
        for cb in self.callbacks:
            cb.on_end(self, interrupted)
        if interrupted:
            raise KeyboardInterrupt
        return self.progress


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
