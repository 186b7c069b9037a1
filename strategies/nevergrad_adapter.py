"""Any Nevergrad optimizer, by name: `nevergrad:NGOpt`, `nevergrad:TwoPointsDE`, `nevergrad:CMA`, ...

The variant after the colon is looked up in `ng.optimizers.registry` and built on an
`ng.p.Array(shape=(dim,))` with `num_workers = batch_size`, so one step asks B candidates (one batched
render) and tells each its loss (−score: Nevergrad minimises). As in the cma-es strategy, Nevergrad sees
z = (x − x0) / scale(), so its default mutation scale of 1 is one stock spread per coordinate.
The parametrization has its own seeded numpy RandomState, and ask/tell run on a private copy of the
global numpy stream too, so a resume from the pickled optimizer (stored as bytes) asks exactly the same.

Options: `budget` (evaluations Nevergrad plans for; NGOpt picks its algorithm from budget, dimension and
workers — give the same budget as the search; default none), `start` (best | mean | median | origin |
a stock voice name | a voice file), `sigma` (1.0: the parametrization's mutation scale, in stock spreads).
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from voicesearch.errors import InputError
from voicesearch.space import SearchSpace
from voicesearch.stock import StockVoices
from voicesearch.types import ScoreResult

from .common import (StagedStrategy, np_state_from_plain, np_state_to_plain, numpy_global_rng, numpy_state_from,
                     opt_number, pickled, unpickled)


def _nevergrad():
    import nevergrad as ng  # imported lazily: it takes a second and most runs never need it

    return ng


class NevergradStrategy(StagedStrategy):
    """Adapter for any Nevergrad optimizer (`nevergrad:NGOpt`, `nevergrad:TwoPointsDE`, …): B asks per step."""

    default_space: ClassVar[str] = "pca"
    transient: ClassVar[tuple[str, ...]] = ("_stock_x", "_optimizer", "_asked")

    def __init__(self, space: SearchSpace, stock: StockVoices, rng: torch.Generator, batch_size: int = 16,
                 variant: Any = "NGOpt", budget: Any = None, start: Any = "best", sigma: Any = 1.0, **options: Any):
        super().__init__(space, stock, rng, batch_size, **options)
        ng = _nevergrad()
        self.variant = str(variant)
        if self.variant not in ng.optimizers.registry:
            import difflib

            close = difflib.get_close_matches(self.variant, list(ng.optimizers.registry), n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "see nevergrad.optimizers.registry"
            raise InputError(f"nevergrad has no optimizer {self.variant!r}; {hint}")
        self.budget = None if budget in (None, "", "none") else opt_number(budget, "budget", int, 1)
        self.sigma = opt_number(sigma, "sigma", float, 1e-12)
        self.start = str(start)
        self.needs_ranking = self.start == "best"
        self.x0: torch.Tensor | None = None
        self.unit: torch.Tensor | None = None
        self.np_rng: dict[str, Any] | None = None
        self.told = 0
        self._optimizer: Any = None
        self._asked: list[Any] | None = None

    def begin(self, points: torch.Tensor, scores: torch.Tensor) -> None:
        ng = _nevergrad()
        self.x0 = points[0].clone() if self.warm_points is not None else self.resolve_start(self.start)
        self.unit = self.space.scale().float().clone()
        rng = {"np": numpy_state_from(self.rng)}
        with numpy_global_rng(rng):
            param = ng.p.Array(shape=(self.space.dim,)).set_mutation(sigma=self.sigma)
            param.random_state = np.random.RandomState(int(torch.randint(0, 2**31 - 1, (1,), generator=self.rng)))
            self._optimizer = ng.optimizers.registry[self.variant](
                parametrization=param, budget=self.budget, num_workers=self.batch_size)
        self.np_rng = np_state_to_plain(rng["np"])

    def _run(self, fn):
        rng = {"np": np_state_from_plain(self.np_rng)}
        with numpy_global_rng(rng):
            out = fn()
        self.np_rng = np_state_to_plain(rng["np"])
        return out

    def propose(self) -> torch.Tensor:
        n = self.batch_size if self.budget is None else max(1, min(self.batch_size, self.budget - self.told))
        self._asked = self._run(lambda: [self._optimizer.ask() for _ in range(n)])
        z = torch.from_numpy(np.stack([c.value for c in self._asked])).float()
        return self.x0 + z * self.unit

    def observe(self, x: torch.Tensor, result: ScoreResult) -> None:
        losses = (-result.total.double()).tolist()

        def tell() -> None:
            for candidate, loss in zip(self._asked, losses):
                self._optimizer.tell(candidate, loss)

        self._run(tell)
        self.told += len(losses)
        self._asked = None

    def done(self) -> bool:
        return self.budget is not None and self.told >= self.budget

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self._optimizer is not None:
            state["optimizer_pickle"] = pickled(self._optimizer)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        blob = state.pop("optimizer_pickle", None)
        super().load_state_dict(state)
        self._optimizer = None if blob is None else unpickled(blob)
        self._asked = None
