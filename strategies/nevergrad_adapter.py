"""Any Nevergrad optimizer, by name: `nevergrad:NGOpt`, `nevergrad:TwoPointsDE`, `nevergrad:CMA`, ...

The variant after the colon is looked up in `ng.optimizers.registry` and built on an
`ng.p.Array(shape=(dim,))` with `num_workers = batch_size`, so one step asks B candidates (one batched
render) and tells each its loss (−score: Nevergrad minimises). As in the cma-es strategy, Nevergrad sees
z = (x − x0) / scale(), so its default mutation scale of 1 is one stock spread per coordinate.
The parametrization has its own seeded numpy RandomState, and ask/tell run on a private copy of the
global numpy stream too. The checkpoint holds no Nevergrad object (a pickle could run code): it holds the
seeds and every loss told, and a resume builds the optimizer afresh and replays its asks and tells, so it
asks exactly what an uninterrupted run would (a digest of the last ask checks it).

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

from .common import (StagedStrategy, ask_digest, np_state_from_plain, np_state_to_plain, numpy_global_rng,
                     numpy_state_from, opt_number, refuse_pickled_state, replay_mismatch)


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
        self.param_seed: int | None = None
        self.np_init: dict[str, Any] | None = None  # the private global-numpy stream when the optimizer was built
        self.losses = torch.zeros(0, dtype=torch.float64)  # every loss told, in order
        self.ask_counts: list[int] = []  # candidates asked per step
        self.last_ask = ""
        self._optimizer: Any = None
        self._asked: list[Any] | None = None

    def begin(self, points: torch.Tensor, scores: torch.Tensor) -> None:
        self.x0 = points[0].clone() if self.warm_points is not None else self.resolve_start(self.start)
        self.unit = self.space.scale().float().clone()
        self.np_init = np_state_to_plain(numpy_state_from(self.rng))
        self.param_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.rng))
        self.np_rng = self.np_init
        self._optimizer = self._run(self._new_optimizer)

    def _new_optimizer(self) -> Any:
        ng = _nevergrad()
        param = ng.p.Array(shape=(self.space.dim,)).set_mutation(sigma=self.sigma)
        param.random_state = np.random.RandomState(self.param_seed)
        return ng.optimizers.registry[self.variant](parametrization=param, budget=self.budget, num_workers=self.batch_size)

    def _run(self, fn):
        rng = {"np": np_state_from_plain(self.np_rng)}
        with numpy_global_rng(rng):
            out = fn()
        self.np_rng = np_state_to_plain(rng["np"])
        return out

    def propose(self) -> torch.Tensor:
        n = self.batch_size if self.budget is None else max(1, min(self.batch_size, self.budget - self.told))
        self._asked = self._run(lambda: [self._optimizer.ask() for _ in range(n)])
        values = np.stack([c.value for c in self._asked])
        self.last_ask = ask_digest(values)
        z = torch.from_numpy(values).float()
        return self.x0 + z * self.unit

    def observe(self, x: torch.Tensor, result: ScoreResult) -> None:
        losses = (-result.total.double()).tolist()

        def tell() -> None:
            for candidate, loss in zip(self._asked, losses):
                self._optimizer.tell(candidate, loss)

        self._run(tell)
        self.told += len(losses)
        self.losses = torch.cat([self.losses, torch.tensor(losses, dtype=torch.float64)])
        self.ask_counts = [*self.ask_counts, len(losses)]
        self._asked = None

    def stop(self) -> str | None:
        if self.budget is not None and self.told >= self.budget:
            return f"the optimizer's budget of {self.budget} evaluations was told"
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        refuse_pickled_state(state, "optimizer_pickle")
        super().load_state_dict(state)
        self._optimizer, self._asked = None, None
        if self.param_seed is not None:
            self._replay()

    def _replay(self) -> None:
        """Rebuild the optimizer from its seeds and replay every ask and tell (no Nevergrad object is loaded)."""
        saved, self.np_rng = self.np_rng, self.np_init
        losses = self.losses.tolist()
        if sum(self.ask_counts) != len(losses):
            raise ValueError(f"{len(losses)} losses for {sum(self.ask_counts)} asks")

        def replay() -> str:
            self._optimizer, start, digest = self._new_optimizer(), 0, ""
            for n in self.ask_counts:
                asked = [self._optimizer.ask() for _ in range(int(n))]
                digest = ask_digest(np.stack([c.value for c in asked]))
                for candidate, loss in zip(asked, losses[start: start + n]):
                    self._optimizer.tell(candidate, loss)
                start += n
            return digest

        digest = self._run(replay)
        same_stream = saved is None or (saved["pos"] == self.np_rng["pos"] and torch.equal(saved["keys"], self.np_rng["keys"]))
        if not same_stream or (self.ask_counts and digest != self.last_ask):
            replay_mismatch(f"nevergrad:{self.variant}")
