"""KVoiceWalk's interpolation search, batched: a finite grid, then done.

The seed ranks the stock voices, takes the top N (`population`, default 10) and, for every pair (a, b),
scores `mid + diff · α / 2` (mid = (a + b) / 2, diff = a − b) for α from −1.5 to 1.5 in steps of 0.1:
α = 1 is a, α = −1 is b, |α| > 1 extrapolates. It keeps the best point per voice; those N points are
the population a random walk then starts from (`interpolate>random-walk` in a chain).

Differences from the seed, on purpose: α = ±1 (the stock voices themselves, already scored while
ranking) are not rendered again, and each point is filed under the voice it lies nearer to (α > 0 under
a, α < 0 under b, the midpoint under both); the seed filed α ≤ 0 under a. The grid is rendered
`batch_size` points at a time and `done()` turns true once it is exhausted.

Options: `population` (10), `reach` (1.5: the largest |α|), `step` (0.1).
"""
from __future__ import annotations

from typing import Any

import torch

from voicesearch.errors import InputError
from voicesearch.space import SearchSpace
from voicesearch.stock import StockVoices
from voicesearch.types import ScoreResult

from .common import StagedStrategy, opt_number


class InterpolationSearch(StagedStrategy):
    """KVoiceWalk's start: every pair of the top-N stock voices at α ∈ [−1.5, 1.5] on mid + diff·α/2; best per voice."""

    def __init__(self, space: SearchSpace, stock: StockVoices, rng: torch.Generator, batch_size: int = 16,
                 population: Any = 10, reach: Any = 1.5, step: Any = 0.1, **options: Any):
        super().__init__(space, stock, rng, batch_size, **options)
        self.population = opt_number(population, "population", int, 2)
        self.reach = opt_number(reach, "reach", float, 0.0)
        self.step = opt_number(step, "step", float, 1e-3)
        steps = int(round(self.reach / self.step))
        # α = k · step; k = ±1/step would be the stock voices themselves
        unit = round(1 / self.step)
        self.alphas = [k * self.step for k in range(-steps, steps + 1)
                       if not (abs(1 / self.step - unit) < 1e-9 and abs(k) == unit)]
        self.voices: torch.Tensor | None = None
        self.voice_best_x: torch.Tensor | None = None
        self.voice_best_score: torch.Tensor | None = None
        self.position = 0
        self.grid_size = 0

    def begin(self, points: torch.Tensor, scores: torch.Tensor) -> None:
        if points.shape[0] < 2:
            raise InputError("interpolate needs at least 2 voices to pair; give more start points or stock voices")
        self.voices = points[: self.population].clone()
        self.voice_best_x = self.voices.clone()
        self.voice_best_score = scores[: self.population].float().clone()
        n = self.voices.shape[0]
        self.grid_size = n * (n - 1) // 2 * len(self.alphas)

    def _grid(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Grid position -> (voice a, voice b, α) for each index."""
        n = self.voices.shape[0]
        pairs = torch.triu_indices(n, n, offset=1)
        pair, k = index // len(self.alphas), index % len(self.alphas)
        return pairs[0][pair], pairs[1][pair], torch.tensor(self.alphas, dtype=torch.float32)[k]

    def propose(self) -> torch.Tensor:
        index = torch.arange(self.position, min(self.position + self.batch_size, self.grid_size))
        a, b, alpha = self._grid(index)
        va, vb = self.voices[a], self.voices[b]
        return (va + vb) / 2 + (va - vb) * alpha[:, None] / 2

    def observe(self, x: torch.Tensor, result: ScoreResult) -> None:
        index = torch.arange(self.position, self.position + x.shape[0])
        a, b, alpha = self._grid(index)
        for i in range(x.shape[0]):
            score = float(result.total[i])
            owners = [int(a[i])] if alpha[i] > 0 else [int(b[i])] if alpha[i] < 0 else [int(a[i]), int(b[i])]
            for v in owners:
                if score > float(self.voice_best_score[v]):
                    self.voice_best_score[v] = score
                    self.voice_best_x[v] = x[i].detach().float().cpu()
        self.position += x.shape[0]

    def stop(self) -> str | None:
        return "every pair on the grid was scored" if self.started and self.position >= self.grid_size else None

    def handoff(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.voice_best_x is None:
            return None
        order = torch.argsort(-self.voice_best_score, stable=True)
        return self.voice_best_x[order], self.voice_best_score[order]
