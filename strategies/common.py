"""What the built-in strategies share: option parsing, ranking the stock voices, warm starts.

`StagedStrategy` runs the common opening of most seeds — score every stock voice once (in the current
space) and rank them — then calls `begin(points, scores)` with the ranked points, best first. A chain
hands its best points to the next stage through `warm_start(points, scores)`, which skips the ranking.
"""
from __future__ import annotations

import hashlib
import warnings
from typing import Any, ClassVar

import numpy as np
import torch

from voicesearch.errors import InputError
from voicesearch.options import opt_bool, opt_choice, opt_list, opt_number  # noqa: F401 - re-exported
from voicesearch.rng import np_state_from_plain, np_state_to_plain, numpy_global_rng, numpy_state_from  # noqa: F401
from voicesearch.space import SearchSpace
from voicesearch.stock import StockVoices
from voicesearch.strategy import Strategy
from voicesearch.types import ScoreResult
from voicesearch.voice import load_voice

# ---------------------------------------------------------------- small helpers (option parsers: voicesearch.options; numpy streams: voicesearch.rng)


def column_median(x: torch.Tensor) -> torch.Tensor:
    """Per-column median of (N, ...), averaging the two middle values for even N (as numpy does)."""
    return torch.from_numpy(np.median(x.detach().cpu().numpy(), axis=0)).to(x.dtype)


# ---------------------------------------------------------------- state helpers


# A third-party optimizer's object (pycma's CMAEvolutionStrategy, a Nevergrad optimizer) is never saved: pickles
# run code when loaded, and run directories get shared. Its state is kept as plain data instead: the seeds it was
# built from and every fitness it was told. A resume builds it afresh and replays the asks and tells; a digest of
# the last ask checks that the replay arrived where the saved run was.


def ask_digest(values: Any) -> str:
    """A short fingerprint of one population of asked points (exact float64 bytes)."""
    data = np.ascontiguousarray(np.asarray(values, dtype=np.float64))
    return hashlib.sha256(data.tobytes()).hexdigest()[:32]


def refuse_pickled_state(state: dict[str, Any], *keys: str) -> None:
    """Checkpoints written before optimizer state became plain data held a pickle: refuse, never unpickle it."""
    if any(k in state for k in keys):
        raise InputError("this checkpoint stores the optimizer as a Python pickle (written by an older voicesearch), "
                         "which could run code when loaded and is refused; start a new run (clone) with the same settings")


def replay_mismatch(what: str) -> None:
    warnings.warn(f"{what}: replaying the saved optimizer state did not land exactly where the checkpoint was "
                  "(another numpy/pycma/nevergrad version or CPU?); the search goes on, but not bit-identical to the "
                  "uninterrupted run", RuntimeWarning, stacklevel=2)


# ---------------------------------------------------------------- the shared opening


class StagedStrategy(Strategy):
    """A strategy that opens by ranking the stock voices (unless warm-started), then runs its own steps.

    Subclasses implement `begin(points, scores)` (points (M, dim) best first), `propose()` and
    `observe(x, result)`; `needs_ranking` says whether the opening is needed for the chosen options.
    Attributes listed in `transient` are caches rebuilt from space and stock, never saved.
    """

    transient: ClassVar[tuple[str, ...]] = ("_stock_x",)

    def __init__(self, space: SearchSpace, stock: StockVoices, rng: torch.Generator, batch_size: int = 16, **options: Any):
        super().__init__(space, stock, rng, opt_number(batch_size, "batch_size", int, 1), **options)
        self.started = False
        self.stock_scores = torch.full((len(stock),), float("nan"))
        self.rank_pos = 0
        self.warm_points: torch.Tensor | None = None
        self.warm_scores: torch.Tensor | None = None
        self._stock_x: torch.Tensor | None = None

    # -- to implement
    needs_ranking: bool = True

    def begin(self, points: torch.Tensor, scores: torch.Tensor) -> None:
        raise NotImplementedError

    def propose(self) -> torch.Tensor:
        raise NotImplementedError

    def observe(self, x: torch.Tensor, result: ScoreResult) -> None:
        raise NotImplementedError

    # -- shared machinery
    @property
    def stock_x(self) -> torch.Tensor:
        """The stock voices' coordinates in this space (N, dim)."""
        if self._stock_x is None:
            with torch.no_grad():
                self._stock_x = torch.cat([self.space.from_packs(chunk).float().cpu()
                                           for chunk in self.stock.packs.split(64)])
        return self._stock_x

    def warm_start(self, points: torch.Tensor, scores: torch.Tensor) -> bool:
        """Start from given points (M, dim) with their scores (M,), best first, instead of ranking stock voices."""
        points = torch.as_tensor(points, dtype=torch.float32).reshape(-1, self.space.dim)
        self.warm_points, self.warm_scores = points.clone(), torch.as_tensor(scores, dtype=torch.float32).reshape(-1).clone()
        return True

    def known_stock_scores(self) -> torch.Tensor:
        """The opening's ranking so far: a score per stock voice, NaN for those not yet scored."""
        return self.stock_scores

    def ranked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Stock coordinates and scores, best first (ties keep the stock order)."""
        order = torch.argsort(-self.stock_scores, stable=True)
        return self.stock_x[order], self.stock_scores[order]

    def resolve_start(self, spec: str) -> torch.Tensor:
        """A start point (dim,) from an option: best | mean | median | origin (x = 0) | a stock voice name | a voice file."""
        with torch.no_grad():
            if spec == "origin":
                return torch.zeros(self.space.dim)
            if spec == "best":
                return self.ranked()[0][0].clone()
            if spec in ("mean", "median"):
                packs = self.stock.packs
                centre = packs.mean(0) if spec == "mean" else column_median(packs)
                return self.space.from_packs(centre[None]).float().cpu()[0]
            if spec in self.stock.names:
                return self.stock_x[self.stock.names.index(spec)].clone()
            pack = load_voice(spec)[:, 0, :]
            return self.space.from_packs(pack[None]).float().cpu()[0]

    def ask(self) -> torch.Tensor:
        if not self.started:
            if self.warm_points is None and self.needs_ranking and self.rank_pos < len(self.stock):
                return self.stock_x[self.rank_pos: self.rank_pos + self.batch_size].clone()
            self.started = True
            if self.warm_points is not None:
                self.begin(self.warm_points, self.warm_scores)
            elif self.needs_ranking:
                self.begin(*self.ranked())
            else:
                self.begin(torch.zeros(0, self.space.dim), torch.zeros(0))
        return self.propose()

    def tell(self, x: torch.Tensor, result: ScoreResult) -> None:
        if not self.started:
            n = x.shape[0]
            self.stock_scores[self.rank_pos: self.rank_pos + n] = result.total.float().cpu()
            self.rank_pos += n
            return
        self.observe(x, result)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        for name in self.transient:
            state.pop(name, None)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._stock_x = None  # the space may have been reloaded: recompute the stock coordinates


class OptimizerOnZ(StagedStrategy):
    """A staged strategy whose position `self.z` (None until `begin`) is moved by a torch optimizer.

    `make_optimizer(params)` builds it (Adam with `self.lr` unless overridden); it is built on first use and
    never saved as an object: the checkpoint holds `z` and the optimizer's `state_dict()` (tensors and numbers),
    and loading rebuilds it from them.
    """

    transient: ClassVar[tuple[str, ...]] = ("_stock_x", "_optimizer")
    z: torch.Tensor | None = None
    _optimizer: torch.optim.Optimizer | None = None

    def make_optimizer(self, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.lr)

    def _adam(self) -> torch.optim.Optimizer:
        if self._optimizer is None:
            self.z.requires_grad_(True)
            self._optimizer = self.make_optimizer([self.z])
        return self._optimizer

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.z is not None:
            state["z"] = self.z.detach().clone()
        if self._optimizer is not None:
            state["optimizer_state"] = self._optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        optimizer_state = state.pop("optimizer_state", None)
        super().load_state_dict(state)
        self._optimizer = None
        if self.z is not None:
            self.z = self.z.detach().clone()
            if optimizer_state is not None:
                self._adam().load_state_dict(optimizer_state)
