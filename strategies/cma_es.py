"""CMA-ES through pycma's ask/tell (`cma.CMAEvolutionStrategy`).

Coordinates handed to pycma are z = (x − x0) / scale(), so sigma0 is in units of the stock spread in
each coordinate; the population is the batch size; scores are negated (pycma minimises). `diagonal`
selects pycma's CMA_diagonal (a diagonal covariance: O(d) per step instead of O(d²)); `auto` turns it on
above 1,000 coordinates — the full pack space has 130,560, where a full covariance cannot be stored.
pycma samples through its `randn` option, given here a private seeded numpy RandomState (anything else
it might draw from numpy's global stream runs on a private copy). The checkpoint holds no pycma object
(a pickle could run code): it holds the two seeds and every fitness told, and a resume builds the
`CMAEvolutionStrategy` afresh and replays its asks and tells, so a resumed run asks exactly what an
uninterrupted one would (a digest of the last ask checks it).

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

from .common import (StagedStrategy, ask_digest, np_state_from_plain, np_state_to_plain, numpy_global_rng,
                     numpy_state_from, opt_bool, opt_number, refuse_pickled_state, replay_mismatch)
from .spaces import MixtureSpace

DIAGONAL_ABOVE = 1000
MAX_POPSIZE = 4096


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
        self.popsize = self.batch_size if popsize in (None, "") else opt_number(popsize, "popsize", int, 2, MAX_POPSIZE)
        self.start = str(start)
        self.use_stop = opt_bool(stop, "stop")  # not `self.stop`: that is the Strategy hook
        self.needs_ranking = self.start == "best"
        self.x0: torch.Tensor | None = None
        self.unit: torch.Tensor | None = None
        self.np_rng: dict[str, Any] | None = None
        self.es_seed: int | None = None  # pycma's sampling stream
        self.np_init: dict[str, Any] | None = None  # the private global-numpy stream when the es was built
        self.fitness = torch.zeros(0, self.popsize, dtype=torch.float64)  # every tell, in order: the es's history
        self.last_ask = ""
        self._es: cma.CMAEvolutionStrategy | None = None
        self._asked: list[np.ndarray] | None = None

    def begin(self, points: torch.Tensor, scores: torch.Tensor) -> None:
        self.x0 = points[0].clone() if self.warm_points is not None else self.resolve_start(self.start)
        self.unit = self.space.scale().float().clone()
        self.es_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.rng))
        self.np_init = np_state_to_plain(numpy_state_from(self.rng))
        rng = {"np": np_state_from_plain(self.np_init)}
        with numpy_global_rng(rng):
            self._es = self._new_es()
        self.np_rng = np_state_to_plain(rng["np"])

    def _new_es(self) -> cma.CMAEvolutionStrategy:
        # pycma draws its samples through options["randn"]: a RandomState of its own, rebuilt from the seed on resume
        options = {"popsize": self.popsize, "CMA_diagonal": self.diagonal, "verbose": -9,
                   "randn": np.random.RandomState(self.es_seed).randn, "maxfevals": float("inf"), "maxiter": float("inf")}
        return cma.CMAEvolutionStrategy(np.zeros(self.space.dim), self.sigma0, options)

    def propose(self) -> torch.Tensor:
        rng = {"np": np_state_from_plain(self.np_rng)}
        with numpy_global_rng(rng):
            self._asked = self._es.ask()
        self.np_rng = np_state_to_plain(rng["np"])
        self.last_ask = ask_digest(self._asked)
        z = torch.from_numpy(np.stack(self._asked)).float()
        return self.x0 + z * self.unit

    def observe(self, x: torch.Tensor, result: ScoreResult) -> None:
        fitness = (-result.total.double()).reshape(1, -1)
        rng = {"np": np_state_from_plain(self.np_rng)}
        with numpy_global_rng(rng):
            self._es.tell(self._asked, fitness[0].tolist())
        self.np_rng = np_state_to_plain(rng["np"])
        self.fitness = torch.cat([self.fitness, fitness])
        self._asked = None

    def stop(self) -> str | None:
        reasons = self._es.stop() if self.use_stop and self._es is not None else None
        return "pycma: " + ", ".join(f"{k}={v}" for k, v in reasons.items()) if reasons else None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        refuse_pickled_state(state, "es")
        if "stop" in state:  # checkpoints written before the `stop()` hook kept the option under this name
            state = {("use_stop" if k == "stop" else k): v for k, v in state.items()}
        super().load_state_dict(state)
        self._es, self._asked = None, None
        if self.es_seed is not None:
            self._replay()

    def _replay(self) -> None:
        """Rebuild the es from its seeds and replay every ask and tell (a pycma object is never loaded)."""
        rng, asked = {"np": np_state_from_plain(self.np_init)}, None
        with numpy_global_rng(rng):
            es = self._new_es()
            for row in self.fitness:
                asked = es.ask()
                es.tell(asked, row.tolist())
        self._es = es
        end = np_state_to_plain(rng["np"])
        same_stream = self.np_rng is None or (end["pos"] == self.np_rng["pos"] and torch.equal(end["keys"], self.np_rng["keys"]))
        if not same_stream or (asked is not None and ask_digest(asked) != self.last_ask):
            replay_mismatch("cma-es")
        self.np_rng = end
