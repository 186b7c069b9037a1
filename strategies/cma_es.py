"""CMA-ES through pycma's ask/tell (`cma.CMAEvolutionStrategy`).

Coordinates handed to pycma are z = (x − x0) / scale(), so sigma0 is in units of the stock spread in
each coordinate; the population is the batch size; scores are negated (pycma minimises). `diagonal`
selects pycma's CMA_diagonal (a diagonal covariance: O(d) per step instead of O(d²)); `auto` turns it on
above 1,000 coordinates — the full pack space has 130,560, where a full covariance cannot be stored.
pycma samples through its `randn` option, given here a private seeded numpy RandomState that pickles
with the strategy object (anything else it might draw from numpy's global stream runs on a private
copy saved with the state), so a resumed run asks exactly what an uninterrupted one would. The state
is the pickled `CMAEvolutionStrategy` (pycma supports pickling) stored as bytes.

Options: `sigma0` (0.3; 2.0 in the mixture space), `diagonal` (auto | true | false), `start` (best: the
best stock voice after ranking them; mean; median; origin; a stock voice name; a voice file — default best,
mean in the mixture space), `popsize` (the batch size), `stop` (true: honour pycma's own stop conditions).

The mixture space has its own defaults because a stock voice is a vertex of the simplex there: every other
logit sits ~14 below its own (weights floored at 1e-6), and steps of 0.3 never give them weight, so the
search would not move. From the uniform mixture, steps of ~2 logits reach any blend.
"""
from __future__ import annotations

from typing import Any, ClassVar

import cma
import numpy as np
import torch

from voicesearch.space import SearchSpace
from voicesearch.stock import StockVoices
from voicesearch.types import ScoreResult

from .common import (StagedStrategy, np_state_from_plain, np_state_to_plain, numpy_global_rng, numpy_state_from,
                     opt_bool, opt_number, pickled, unpickled)
from .spaces import MixtureSpace

DIAGONAL_ABOVE = 1000


class CMAES(StagedStrategy):
    """CMA-ES (pycma) from the best stock voice, sigma0 in units of the stock spread; CMA_diagonal for large spaces."""

    default_space: ClassVar[str] = "pca"
    transient: ClassVar[tuple[str, ...]] = ("_stock_x", "_es", "_asked")

    def __init__(self, space: SearchSpace, stock: StockVoices, rng: torch.Generator, batch_size: int = 16,
                 sigma0: Any = None, diagonal: Any = "auto", start: Any = None, popsize: Any = None,
                 stop: Any = True, **options: Any):
        super().__init__(space, stock, rng, batch_size, **options)
        mixture = isinstance(space, MixtureSpace)
        sigma0 = (2.0 if mixture else 0.3) if sigma0 in (None, "") else sigma0
        start = ("mean" if mixture else "best") if start in (None, "") else start
        self.sigma0 = opt_number(sigma0, "sigma0", float, 1e-12)
        auto = str(diagonal).lower() == "auto"
        self.diagonal = space.dim > DIAGONAL_ABOVE if auto else opt_bool(diagonal, "diagonal")
        self.popsize = self.batch_size if popsize in (None, "") else opt_number(popsize, "popsize", int, 2)
        self.start = str(start)
        self.stop = opt_bool(stop, "stop")
        self.needs_ranking = self.start == "best"
        self.x0: torch.Tensor | None = None
        self.unit: torch.Tensor | None = None
        self.np_rng: dict[str, Any] | None = None
        self._es: cma.CMAEvolutionStrategy | None = None
        self._asked: list[np.ndarray] | None = None

    def begin(self, points: torch.Tensor, scores: torch.Tensor) -> None:
        self.x0 = points[0].clone() if self.warm_points is not None else self.resolve_start(self.start)
        self.unit = self.space.scale().float().clone()
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.rng))
        # pycma draws its samples through options["randn"]: a private RandomState pickles with the es, so
        # a resumed es continues the very same stream (np.random.randn would pickle as a detached copy)
        options = {"popsize": self.popsize, "CMA_diagonal": self.diagonal, "verbose": -9,
                   "randn": np.random.RandomState(seed).randn, "maxfevals": float("inf"), "maxiter": float("inf")}
        rng = {"np": numpy_state_from(self.rng)}
        with numpy_global_rng(rng):
            self._es = cma.CMAEvolutionStrategy(np.zeros(self.space.dim), self.sigma0, options)
        self.np_rng = np_state_to_plain(rng["np"])

    def propose(self) -> torch.Tensor:
        rng = {"np": np_state_from_plain(self.np_rng)}
        with numpy_global_rng(rng):
            self._asked = self._es.ask()
        self.np_rng = np_state_to_plain(rng["np"])
        z = torch.from_numpy(np.stack(self._asked)).float()
        return self.x0 + z * self.unit

    def observe(self, x: torch.Tensor, result: ScoreResult) -> None:
        rng = {"np": np_state_from_plain(self.np_rng)}
        with numpy_global_rng(rng):
            self._es.tell(self._asked, (-result.total.double()).tolist())
        self.np_rng = np_state_to_plain(rng["np"])
        self._asked = None

    def done(self) -> bool:
        return self.stop and self._es is not None and bool(self._es.stop())

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self._es is not None:
            state["es"] = pickled(self._es)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        blob = state.pop("es", None)
        super().load_state_dict(state)
        self._es = None if blob is None else unpickled(blob)
        self._asked = None
