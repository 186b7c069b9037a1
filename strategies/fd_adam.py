"""Finite-difference Adam (the "fd-adam" seed: gradient descent on PCA coordinates of the voice).

The seed: PCA of the stock voices (one frame, row 50, repeated on all 510 rows), start at the
centroid (x = 0), forward differences with ε = 0.01 on every coordinate, Adam (or AdamW) with lr 0.01,
loss `1 − cosine` of WavLM embeddings (or an L2 distance). Here all d + 1 renders of one step (the point
and its d perturbations) are ONE batch, so `batch_size` is ignored: a step costs d + 1 evaluations.
Use it on a small space: `--space pca` (add `--space-opt frame=50` for the seed's one-frame variant,
`center=median` for its centroid).

ε and lr are in units of the space's `scale()` (std units in the pca space, where they equal the seed's
numbers; the seed's raw-unit ε = 0.01 was ~0.0005–0.002 stock stds).

Options: `lr` (0.01), `eps` (0.01), `optimizer` (adam | adamw), `weight_decay` (AdamW's, 0.01),
`loss` (cosine: 1 − total; l2: squared distance of `result.embeddings` to the target embedding),
`start` (median: the stock median, x ≈ 0 in `pca` with center=median; origin: x = 0; best: the best
stock voice after ranking them; mean; a stock voice name; a voice file), `max_dim` (4096).

`loss=l2` needs the target embedding: a scorer may attach it to its result as `target_embedding` (D,).
Without it (no scorer does yet) the strategy says so once and uses 2 − 2·total, which IS the squared
L2 distance of unit-norm embeddings when total is their cosine (every embedding scorer here); Adam is
blind to a constant factor on the loss, so `l2` and `cosine` then follow the same path.
"""
from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch

from voicesearch.errors import InputError
from voicesearch.space import SearchSpace
from voicesearch.stock import StockVoices
from voicesearch.types import ScoreResult

from .common import OptimizerOnZ, opt_choice, opt_number


class FiniteDifferenceAdam(OptimizerOnZ):
    """The fd-adam seed: Adam/AdamW on forward finite differences (ε = 0.01), all d + 1 renders of a step in one batch."""

    default_space: ClassVar[str] = "pca"
    transient: ClassVar[tuple[str, ...]] = ("_stock_x", "_optimizer", "_warned")

    def __init__(self, space: SearchSpace, stock: StockVoices, rng: torch.Generator, batch_size: int = 16,
                 lr: Any = 0.01, eps: Any = 0.01, optimizer: Any = "adam", weight_decay: Any = 0.01,
                 loss: Any = "cosine", start: Any = "median", max_dim: Any = 4096, **options: Any):
        if "frame" in options:
            raise InputError("fd-adam: the seed's one-frame variant is a space setting: --space pca --space-opt frame=50")
        super().__init__(space, stock, rng, batch_size, **options)
        self.lr = opt_number(lr, "lr", float, 0.0)
        self.eps = opt_number(eps, "eps", float, 1e-12)
        self.optimizer = opt_choice(optimizer, "optimizer", ("adam", "adamw"))
        self.weight_decay = opt_number(weight_decay, "weight_decay", float, 0.0)
        self.loss = opt_choice(loss, "loss", ("cosine", "l2"))
        self.start = str(start)
        self.needs_ranking = self.start == "best"
        limit = opt_number(max_dim, "max_dim", int, 1)
        if space.dim > limit:
            raise InputError(f"fd-adam renders d + 1 = {space.dim + 1} voices per step in this space; "
                             f"use a small space (--space pca) or raise --strategy-opt max_dim")
        self.x0: torch.Tensor | None = None
        self.unit: torch.Tensor | None = None
        self.z: torch.Tensor | None = None  # position in units of scale() from x0: what Adam moves
        self.steps_done = 0
        self._optimizer: torch.optim.Optimizer | None = None
        self._warned = False

    def begin(self, points: torch.Tensor, scores: torch.Tensor) -> None:
        self.x0 = points[0].clone() if self.warm_points is not None else self.resolve_start(self.start)
        self.unit = self.space.scale().float().clone()
        self.z = torch.zeros(self.space.dim)

    def make_optimizer(self, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr)
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    def propose(self) -> torch.Tensor:
        z = self.z.detach()
        probes = torch.cat([z[None], z + self.eps * torch.eye(self.space.dim)])
        return self.x0 + probes * self.unit

    def losses(self, result: ScoreResult) -> torch.Tensor:
        if self.loss == "l2":
            target = getattr(result, "target_embedding", None)
            if result.embeddings is not None and target is not None:
                return ((result.embeddings.float() - target.float().to(result.embeddings.device)) ** 2).sum(dim=1).cpu()
            if not self._warned:
                self._warned = True
                warnings.warn("fd-adam loss=l2: the scorer gives no target embedding; using 2 − 2·total "
                              "(the squared L2 distance of unit embeddings when total is their cosine)", stacklevel=2)
            return 2.0 - 2.0 * result.total.float()
        return 1.0 - result.total.float()

    def observe(self, x: torch.Tensor, result: ScoreResult) -> None:
        loss = self.losses(result)
        gradient = (loss[1:] - loss[0]) / self.eps
        optimizer = self._adam()
        optimizer.zero_grad()
        self.z.grad = gradient.to(self.z.dtype)
        optimizer.step()
        self.steps_done += 1
