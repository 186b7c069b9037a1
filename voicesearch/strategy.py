"""Strategy: proposes candidate coordinates (ask) and learns from their scores (tell).

A minimal strategy (see examples/custom_strategy.py) is ~20 lines:

    class Jitter(Strategy):
        def ask(self):
            return self.center + 0.05 * torch.randn(self.batch_size, self.space.dim, generator=self.rng)
        def tell(self, x, result):
            self.center = x[result.total.argmax()]

State that must survive a resume (plain tensors, numbers, strings, lists, dicts) is saved
automatically from instance attributes; override `state_dict` for anything else.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar

import torch

from .errors import InputError, UnknownOptions
from .space import SearchSpace
from .stock import StockVoices
from .types import ScoreResult

_NOT_STATE = {"space", "stock", "rng"}


def _is_plain(v: Any) -> bool:
    if v is None or isinstance(v, (bool, int, float, str, bytes, torch.Tensor)):
        return True
    if isinstance(v, (list, tuple)):
        return all(_is_plain(i) for i in v)
    if isinstance(v, dict):
        return all(isinstance(k, (str, int)) and _is_plain(i) for k, i in v.items())
    return False


class Strategy(ABC):
    """Base class of all search strategies.

    - `ask()` returns (B, space.dim) float32 CPU coordinates: one batch = one batched render.
    - `tell(x, result)` receives the same x and the scores (`result.total` (B,), higher is better).
    - `wants_grad`: whether the loop runs renderer and scorer with autograd and fills `result.grad` with
      d total / d x (B, dim). The class value says whether the strategy ever wants gradients (tools that size
      memory read `type(s).wants_grad`; None: it depends on the options, as a chain's on its stages). An
      instance may set `self.wants_grad` to what its next batch needs (False while ranking stock voices):
      the loop reads the instance's value after every `ask()`.
    - `restarts_reference()`: True when the batch just asked starts a new incumbent (KVoiceWalk's walk scores
      its start voice afresh): the loop then has the scorer forget running references such as an early exit.
    - `default_space` is the search space used when the user leaves `--space` at auto.

    Optional hooks (the defaults mean "not supported"):
    - `stop()` returns why the search should end now (a short text, like pycma's `stop()`), or None.
      `done()` is `stop() is not None`; older strategies that override `done()` alone still work.
    - `warm_start(points, scores)` starts from given points (M, dim), best first, instead of the strategy's own
      opening, and returns True; a chain calls it on the next stage. The default takes nothing (False).
    - `handoff()` returns the (points, scores), best first, worth handing to the next stage of a chain, or
      None (the default): the chain then hands over the best points it has seen.
    - `known_stock_scores()` returns the scores (len(stock),) of the stock voices this strategy has already
      scored (NaN where not yet), or None (the default): the report reuses them for its baseline.
    - `may_want_grad()` says whether any batch of this strategy, as configured, may want gradients (tools that
      size memory ask it, e.g. `--batch auto`); the default follows `wants_grad`.
    - `favorite(evaluate)` is asked once when the search ends (not when it is stopped): the point (dim,) the
      strategy answers with, or None (the default) for the best scored point. Like pycma's `xfavorite` (the
      distribution's mean) next to `xbest`. `evaluate(points)` scores (M, dim) points without gradients,
      outside the budget. The search returns that voice (`Progress.voice`, the run's voice_final.pt).
    """

    name: ClassVar[str] = ""
    wants_grad: bool | None = False  # a class default; instances may set their own (see above)
    default_space: ClassVar[str] = "full"

    def __init__(self, space: SearchSpace, stock: StockVoices, rng: torch.Generator, batch_size: int = 16, **options: Any):
        self.space = space
        self.stock = stock
        self.rng = rng
        self.batch_size = int(batch_size)
        if options:
            raise UnknownOptions(f"{type(self).__name__} got unknown options: {', '.join(sorted(options))}")

    @abstractmethod
    def ask(self) -> torch.Tensor: ...

    @abstractmethod
    def tell(self, x: torch.Tensor, result: ScoreResult) -> None: ...

    @classmethod
    def space_for(cls, options: dict[str, Any]) -> str:
        """The space `--space auto` picks for this strategy with these options: `default_space` unless overridden."""
        return cls.default_space

    def stop(self) -> str | None:
        """Why the search should end now (e.g. "grid exhausted"), or None to go on."""
        return None

    def done(self) -> bool:
        """True when the search should end: `stop()` gave a reason (override either)."""
        return self.stop() is not None

    def warm_start(self, points: torch.Tensor, scores: torch.Tensor) -> bool:
        """Start from `points` (M, dim) with `scores` (M,), best first; True when taken (default: not supported)."""
        return False

    def handoff(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(points, scores) for the next stage of a chain, best first; None (default): the chain's best points."""
        return None

    def known_stock_scores(self) -> torch.Tensor | None:
        """Scores (len(self.stock),) of the stock voices already scored, NaN where not; None (default): none kept."""
        return None

    def may_want_grad(self) -> bool:
        """Whether some batch may want gradients: the class value of `wants_grad` (None there: the instance's)."""
        wants = type(self).wants_grad
        return bool(self.wants_grad if wants is None else wants)

    def restarts_reference(self) -> bool:
        return False

    def favorite(self, evaluate: Callable[[torch.Tensor], ScoreResult]) -> torch.Tensor | None:
        """The point (dim,) to answer with at the end; None (default): the best scored point."""
        return None

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in vars(self).items() if k not in _NOT_STATE and _is_plain(v)}
        state["rng"] = self.rng.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Set the saved attributes back; an entry that would replace a method or a part, or change a kind of
        value (a tensor for a number, ...), means the checkpoint is not this strategy's: InputError."""
        state = dict(state)
        rng = state.pop("rng", None)
        if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8:
            raise InputError("the checkpoint's strategy state has no random-generator state")
        for k, v in state.items():
            if not isinstance(k, str) or k in _NOT_STATE or k.startswith("__") or not _is_plain(v):
                raise InputError(f"the checkpoint's strategy state has an entry {k!r} that is not plain state")
            current = vars(self)[k] if k in vars(self) else getattr(type(self), k, None)
            if callable(current) or isinstance(current, property) or not _same_kind(current, v):
                raise InputError(f"the checkpoint's strategy state gives {k!r} a {type(v).__name__} where "
                                 f"{type(self).__name__} keeps a {type(current).__name__}; the checkpoint is not this run's")
        self.rng.set_state(rng)
        for k, v in state.items():
            setattr(self, k, v)


def _same_kind(current: Any, new: Any) -> bool:
    """None fits anything (state set later); numbers fit numbers; otherwise the same kind of container/tensor."""
    if current is None or new is None:
        return True
    kinds = (torch.Tensor, str, bytes, (list, tuple), dict, (bool, int, float))
    return any(isinstance(current, k) and isinstance(new, k) for k in kinds)
