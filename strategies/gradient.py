"""Gradient ascent with true gradients through Kokoro and a differentiable scorer.

`wants_grad = True` makes the loop render and score with autograd and hand back d total / d x. The
strategy runs B independent Adam chains at once (one batched render and backward per step), started
from the B best stock voices (chain 0 from the best), after one ranking pass over the stock voices
(rendered without gradients). Adam moves z = (x − x_start) / scale(), i.e. in stock-spread units.

The answer is not the single point that scored best but the mean, in the space, of the `average` chains that
score best at the end (re-scored once, outside the budget; `Strategy.favorite`). Chains that reach the target
from different stock voices share what belongs to the speaker and differ in what only the objective's embedder
hears; the mean keeps the first. Measured on 9 real speakers (docs/quality.md, benchmarks/clone_quality.py,
768 evaluations, judged by embedders the search did not optimize): the mean of the top 4 raised held-out
closure for both objectives tried (ECAPA + Resemblyzer judged by CAM++: 49 → 53 %; ECAPA judged by CAM++:
41 → 47 %, by Resemblyzer: 13 → 26 %) and DNSMOS (3.33 → 3.40; 3.37 → 3.42), at a lower objective score.

Staying near natural voices: after each step a chain is projected back into a trust region — the ball
rms(z) ≤ `radius` around its start (a Mahalanobis radius in stock stds per coordinate; 0 turns it
off) — and an optional `penalty` adds `penalty · mean(z²)` to the loss. In the `pca` space every point
stays on the stock span as well.
Speaking rate is out of reach of gradients: Kokoro rounds durations to whole frames, so no gradient
flows to the prosody columns through timing (F0, energy and timbre do carry gradients). `speed` stays
whatever the search was given.

Options: `average` (4; 1 = answer with the best point seen), `lr` (0.05), `radius` (1.5, as measured in
benchmarks/recovery.py; 0 = none), `penalty` (0.0), `chains` (8, at most the batch size and the number of start points; in one run each on the example target,
8 chains passed Resemblyzer 0.917 after 422 evaluations, 16 chains were at 0.873 after 486), `start` (top:
the best stock voices; or best, mean, median, origin, a stock voice name or voice file — all chains then
start there, chain i > 0 jittered by `jitter` (0.05) stds).
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch

from voicesearch.errors import InputError
from voicesearch.space import SearchSpace
from voicesearch.stock import StockVoices
from voicesearch.types import ScoreResult

from .common import OptimizerOnZ, opt_number


class GradientAscent(OptimizerOnZ):
    """Adam on true gradients (differentiable renderer + scorer), B chains from the best stock voices, trust region."""

    default_space: ClassVar[str] = "pca"
    wants_grad = True  # the class says it renders with gradients; the instance turns them off while ranking
    transient: ClassVar[tuple[str, ...]] = ("_stock_x", "_optimizer")

    def __init__(self, space: SearchSpace, stock: StockVoices, rng: torch.Generator, batch_size: int = 16,
                 lr: Any = 0.05, radius: Any = 1.5, penalty: Any = 0.0, chains: Any = None, start: Any = "top",
                 jitter: Any = 0.05, average: Any = 4, **options: Any):
        super().__init__(space, stock, rng, batch_size, **options)
        self.lr = opt_number(lr, "lr", float, 0.0)
        self.radius = opt_number(radius, "radius", float, 0.0)
        self.penalty = opt_number(penalty, "penalty", float, 0.0)
        self.chains = min(self.batch_size, 8) if chains in (None, "") else opt_number(chains, "chains", int, 1)
        self.jitter = opt_number(jitter, "jitter", float, 0.0)
        self.average = opt_number(average, "average", int, 1)
        self.start = str(start)
        self.needs_ranking = self.start in ("top", "best")
        self.wants_grad = False  # no gradients while ranking the stock voices
        self.x_start: torch.Tensor | None = None
        self.unit: torch.Tensor | None = None
        self.z: torch.Tensor | None = None
        self._optimizer: torch.optim.Optimizer | None = None

    def begin(self, points: torch.Tensor, scores: torch.Tensor) -> None:
        if self.warm_points is not None or self.start == "top":
            starts = points[: self.chains].clone()
        else:
            one = self.resolve_start(self.start)
            noise = torch.randn(self.chains, self.space.dim, generator=self.rng) * self.jitter * self.space.scale()
            noise[0] = 0
            starts = one + noise
        self.x_start = starts
        self.unit = self.space.scale().float().clone()
        self.z = torch.zeros_like(starts)
        self.wants_grad = True

    def propose(self) -> torch.Tensor:
        return self.x_start + self.z.detach() * self.unit

    def favorite(self, evaluate: Callable[[torch.Tensor], ScoreResult]) -> torch.Tensor | None:
        """The mean of the `average` chains whose current points score best (None: ranking only, or average 1)."""
        if self.z is None or self.average < 2 or self.chains < 2:
            return None
        x = self.propose()
        best = evaluate(x).total.float().argsort(descending=True)[: self.average]
        return x[best].mean(0)

    def observe(self, x: torch.Tensor, result: ScoreResult) -> None:
        if result.grad is None:
            raise InputError("the gradient strategy needs a differentiable renderer and scorer (result.grad was empty); "
                             "pick a differentiable scorer or a gradient-free strategy")
        z = self.z.detach()
        # loss = −total + penalty·mean(z²); d/dz through x = x_start + z·unit
        gradient = -result.grad.float().cpu() * self.unit + self.penalty * 2 * z / self.space.dim
        optimizer = self._adam()
        optimizer.zero_grad()
        self.z.grad = torch.nan_to_num(gradient)
        optimizer.step()
        if self.radius > 0:
            with torch.no_grad():
                rms = self.z.pow(2).mean(dim=1, keepdim=True).sqrt()
                self.z.mul_((self.radius / rms.clamp_min(1e-12)).clamp(max=1.0))
