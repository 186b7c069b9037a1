"""Search spaces map search coordinates x (B, d) to voice packs (B, 510, 256) and back.

A strategy only sees coordinates. Spaces are plug-ins too (`voicesearch.spaces` entry points); the
two basic ones live here because every other space builds on the same idea.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from .stock import StockVoices
from .voice import PACK_ROWS, STYLE_DIM


class SearchSpace(ABC):
    """Coordinates <-> packs. `to_packs` must be differentiable in x (gradient strategies rely on it)."""

    dim: int

    @abstractmethod
    def to_packs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, dim) -> (B, 510, 256)."""

    @abstractmethod
    def from_packs(self, packs: torch.Tensor) -> torch.Tensor:
        """(B, 510, 256) -> (B, dim): the coordinates of the nearest point of the space."""

    def scale(self) -> torch.Tensor:
        """A per-coordinate spread (dim,) of the stock voices in this space: a natural step size."""
        return torch.ones(self.dim)

    def state_dict(self) -> dict:
        """Tensors needed to rebuild the space exactly (saved with checkpoints)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class FullPackSpace(SearchSpace):
    """Every number of the pack is a coordinate (510 × 256 = 130,560), as KVoiceWalk walks it."""

    def __init__(self, stock: StockVoices, **_: object) -> None:
        self.dim = PACK_ROWS * STYLE_DIM
        self._scale = stock.packs.std(dim=0).reshape(-1)

    def to_packs(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], PACK_ROWS, STYLE_DIM)

    def from_packs(self, packs: torch.Tensor) -> torch.Tensor:
        return packs.reshape(packs.shape[0], -1)

    def scale(self) -> torch.Tensor:
        return self._scale


class OffsetSpace(SearchSpace):
    """One 256-d offset added to every row of a base pack (the stock mean unless a base is given)."""

    def __init__(self, stock: StockVoices, base: torch.Tensor | None = None, **_: object) -> None:
        self.dim = STYLE_DIM
        self.base = (stock.packs.mean(dim=0) if base is None else base.reshape(PACK_ROWS, STYLE_DIM)).clone()
        self._scale = (stock.packs - stock.packs.mean(0)).mean(dim=1).std(dim=0)

    def to_packs(self, x: torch.Tensor) -> torch.Tensor:
        return self.base.to(x.device, x.dtype) + x[:, None, :]

    def from_packs(self, packs: torch.Tensor) -> torch.Tensor:
        return (packs - self.base.to(packs.device, packs.dtype)).mean(dim=1)

    def scale(self) -> torch.Tensor:
        return self._scale

    def state_dict(self) -> dict:
        return {"base": self.base}

    def load_state_dict(self, state: dict) -> None:
        self.base = state["base"].clone()
