"""KVoiceWalk's random walk, batched.

The seed: score every stock voice, keep the top N (`population`, default 10), start from their mean (or
a given voice), then repeat: mutate the best voice as `best + randn · std(population) · diversity` with
diversity ~ U(0.01, 0.15), and keep the mutation only if it scores higher. Here each step mutates the
best voice B times at once (one batched render), each with its own diversity, and keeps the best of the
batch when it beats the best so far. With B = 1 this is the seed's walk. The seed's early exit (skip the
second text when the first scores badly) is a scorer matter (staged scoring), not a strategy one.

Options: `population` (10), `start` (`top-mean` = mean of the top N, as the seed; or best, mean,
median, a stock voice name or a voice file), `diversity` (`0.01,0.15`: the uniform range).
Works in any space; the seed walked the full pack (`--space full`), where std is per number.
"""
from __future__ import annotations

from typing import Any

import torch

from voicesearch.errors import InputError
from voicesearch.space import SearchSpace
from voicesearch.stock import StockVoices
from voicesearch.types import ScoreResult

from .common import StagedStrategy, opt_list, opt_number


class RandomWalk(StagedStrategy):
    """KVoiceWalk's random walk: B mutations of the best voice per step (std of the top-N stock voices × U(0.01, 0.15))."""

    def __init__(self, space: SearchSpace, stock: StockVoices, rng: torch.Generator, batch_size: int = 16,
                 population: Any = 10, start: Any = "top-mean", diversity: Any = "0.01,0.15", **options: Any):
        super().__init__(space, stock, rng, batch_size, **options)
        self.population = opt_number(population, "population", int, 2)
        self.start = str(start)
        bounds = [opt_number(v, "diversity") for v in opt_list(diversity)]
        if len(bounds) != 2 or not 0 <= bounds[0] <= bounds[1]:
            raise InputError(f"option diversity={diversity!r} must be two numbers low,high with 0 ≤ low ≤ high")
        self.diversity = bounds
        self.std: torch.Tensor | None = None
        self.best_x: torch.Tensor | None = None
        self.best_score = float("-inf")
        self.start_scored = False

    def begin(self, points: torch.Tensor, scores: torch.Tensor) -> None:
        population = points[: self.population]
        if population.shape[0] < 2:  # a single warm-start point: take the spread of the whole stock
            population = self.stock_x
        self.std = population.std(dim=0)
        if self.warm_points is not None:
            self.best_x, self.best_score, self.start_scored = points[0].clone(), float(scores[0]), True
        elif self.start == "top-mean":
            self.best_x = population.mean(dim=0)
        else:
            self.best_x = self.resolve_start(self.start)

    def propose(self) -> torch.Tensor:
        if not self.start_scored:
            return self.best_x[None].clone()  # score the start first, as the seed does
        low, high = self.diversity
        diversity = low + (high - low) * torch.rand(self.batch_size, 1, generator=self.rng)
        noise = torch.randn(self.batch_size, self.space.dim, generator=self.rng)
        return self.best_x + noise * self.std * diversity

    def restarts_reference(self) -> bool:
        # As the seed: stock voices and the start voice are scored in full; the walk's early exit then
        # measures against the walk's own best, not against the best stock voice
        return not self.start_scored

    def observe(self, x: torch.Tensor, result: ScoreResult) -> None:
        self.start_scored = True
        i = int(result.total.argmax())
        score = float(result.total[i])
        if score > self.best_score:
            self.best_x, self.best_score = x[i].detach().float().cpu().clone(), score
