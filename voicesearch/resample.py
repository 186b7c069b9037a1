"""Batched, differentiable resampling in torch (no torchaudio: it does not load beside torch 2.13).

Polyphase windowed-sinc (Kaiser window), the same design as torchaudio's `resample` / librosa's
`kaiser_best` family, so a batch stays on the GPU between the renderer and the embedding models.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

from .types import AudioBatch


@lru_cache(maxsize=16)
def _kernel(orig: int, new: int, width: int, rolloff: float, beta: float) -> tuple[torch.Tensor, int]:
    base = min(orig, new) * rolloff
    half = int(math.ceil(width * orig / base))
    idx = torch.arange(-half, half + orig, dtype=torch.float64)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx
    t = (t * base).clamp(-width, width)
    window = torch.special.i0(beta * torch.sqrt(1 - (t / width) ** 2)) / torch.special.i0(torch.tensor(beta, dtype=torch.float64))
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, torch.ones_like(t), t))
    kernel = sinc * window * base / orig
    return kernel.float(), half


def resample(wave: torch.Tensor, orig_sr: int, new_sr: int, width: int = 16, rolloff: float = 0.945) -> torch.Tensor:
    """Resample (..., T) audio from `orig_sr` to `new_sr`. Output length is ceil(T * new / orig)."""
    if orig_sr == new_sr:
        return wave
    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    kernel, half = _kernel(orig, new, width, rolloff, 14.769656459379492)
    kernel = kernel.to(wave.device, wave.dtype)
    shape = wave.shape
    x = wave.reshape(-1, 1, shape[-1])
    length = shape[-1]
    x = torch.nn.functional.pad(x, (half, half + orig))
    y = torch.nn.functional.conv1d(x, kernel, stride=orig)  # (N, new, frames)
    y = y.transpose(1, 2).reshape(x.shape[0], -1)
    target = int(math.ceil(new * length / orig))
    return y[..., :target].reshape(*shape[:-1], target)


def resample_batch(audio: AudioBatch, sample_rate: int, width: int = 16, rolloff: float = 0.945) -> AudioBatch:
    """`audio` at `sample_rate`: the waves resampled (on their device, differentiably), each length ceil(n * new / old);
    the renderer's f0, at its own frame rate, comes along."""
    if audio.sample_rate == sample_rate:
        return audio
    wave = resample(audio.wave, audio.sample_rate, sample_rate, width, rolloff)
    lengths = (audio.lengths * sample_rate + audio.sample_rate - 1) // audio.sample_rate
    return AudioBatch(wave, lengths, sample_rate, audio.f0)
