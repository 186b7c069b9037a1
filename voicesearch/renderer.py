"""The renderer protocol: voice packs + text -> audio. The loop talks only to this.

The Kokoro implementation is a plug-in (`voicesearch.renderers` entry points: `kokoro`, `kokoro-onnx`).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from .resample import resample_batch
from .stock import StockVoices
from .types import AudioBatch


@runtime_checkable
class Renderer(Protocol):
    sample_rate: int
    device: torch.device

    def render(self, packs: torch.Tensor, text: str, *, speed: float = 1.0, differentiable: bool = False) -> AudioBatch:
        """Speak `text` with each of B packs (B, 510, 256) in one batched forward; B waveforms.

        With `differentiable=True` the waveforms carry gradients back to `packs`.
        """
        ...

    def stock_voices(self) -> StockVoices:
        """The stock voices this renderer's model ships with (used when no folder is given)."""
        ...


class Renders:
    """Lazy, cached renders of one candidate batch, handed to a scorer.

    `audio(i)` renders text i for every candidate (once); `audio(i, index=idx)` renders only the
    selected candidates — staged scorers (KVoiceWalk's early exit) use it to skip hopeless ones.
    Resampling to the scorer's rate happens on the renderer's device and is cached too.
    """

    def __init__(self, renderer: Renderer, packs: torch.Tensor, texts: list[str], *, speed: float = 1.0, differentiable: bool = False):
        self.renderer = renderer
        self.packs = packs
        self.texts = texts
        self.speed = speed
        self.differentiable = differentiable
        self.rendered_items = 0
        self._cache: dict[tuple, AudioBatch] = {}

    def __len__(self) -> int:
        return self.packs.shape[0]

    def audio(self, text: int = 0, sample_rate: int | None = None, index: torch.Tensor | None = None) -> AudioBatch:
        key = (text, None if index is None else tuple(index.tolist()))
        if key not in self._cache:
            packs = self.packs if index is None else self.packs[index]
            self._cache[key] = self.renderer.render(packs, self.texts[text], speed=self.speed, differentiable=self.differentiable)
            self.rendered_items += packs.shape[0]
        batch = self._cache[key]
        if sample_rate is None or sample_rate == batch.sample_rate:
            return batch
        rkey = key + (sample_rate,)
        if rkey not in self._cache:
            self._cache[rkey] = resample_batch(batch, sample_rate)
        return self._cache[rkey]
