"""Random, differentiable channel transformations of a batch of waveforms (expectation over transformations).

A search that scores each candidate through one embedder on clean renders learns what that embedder likes,
including details no listener (and no other embedder) hears. Scoring renders that went through a random
channel — a random crop of the utterance, a random low-pass and spectral tilt, noise at a random SNR —
averages those details out over the steps: only what survives every channel keeps the score up, and that is
what the person's voice has in common across recordings. The transformations are the usual ones used to
make adversarial examples transfer between models, turned to our purpose: a voice that transfers to
embedders the search never saw.

`ChannelAugment(strength)(audio, generator)` returns a new `AudioBatch`; gradients flow to the waveform.
`strength` 0 returns the batch unchanged; 1 is the default range below.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from voicesearch.types import AudioBatch


@dataclass
class ChannelAugment:
    """Crop to 60–100 % of each item, low-pass at 3.4–8 kHz, tilt ±3 dB/octave, white noise at 20–45 dB SNR.

    The ranges widen with `strength` (0 = off). Every item draws its own channel from `generator`.
    """

    strength: float = 1.0
    min_crop: float = 0.6
    cutoff_hz: tuple[float, float] = (3400.0, 8000.0)
    tilt_db_per_octave: float = 3.0
    snr_db: tuple[float, float] = (20.0, 45.0)

    def __call__(self, audio: AudioBatch, generator: torch.Generator) -> AudioBatch:
        if self.strength <= 0 or len(audio) == 0:
            return audio
        b, device = len(audio), audio.wave.device
        draw = lambda: torch.rand(b, generator=generator).to(device)  # noqa: E731  (CPU generator: same on every device)
        wave, lengths = self._crop(audio.wave, audio.lengths.to(device), draw(), draw())
        wave = self._filter(wave, audio.sample_rate, draw(), draw())
        wave = self._noise(wave, lengths, draw(), generator)
        return AudioBatch(wave, lengths, audio.sample_rate)

    def _crop(self, wave: torch.Tensor, lengths: torch.Tensor, u_len: torch.Tensor,
              u_start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep_share = 1.0 - self.strength * (1.0 - self.min_crop) * u_len
        keep = (lengths.float() * keep_share).long().clamp_min(1)
        start = ((lengths - keep).float() * u_start).long()
        index = start[:, None] + torch.arange(int(keep.max()), device=wave.device)[None]
        inside = index < (start + keep)[:, None]
        cropped = wave.gather(1, index.clamp_max(wave.shape[1] - 1)) * inside
        return cropped, keep

    def _filter(self, wave: torch.Tensor, rate: int, u_cut: torch.Tensor, u_tilt: torch.Tensor) -> torch.Tensor:
        n = wave.shape[1]
        freqs = torch.fft.rfftfreq(n, 1.0 / rate).to(wave.device)
        low, high = self.cutoff_hz
        high = min(high, rate / 2)
        cutoff = high - self.strength * (high - min(low, high)) * u_cut
        # a smooth (raised-cosine, 500 Hz wide) low-pass edge: no ringing artefacts for the embedder to key on
        edge = ((freqs[None] - cutoff[:, None]) / 500.0).clamp(0, 1)
        gain = 0.5 * (1 + torch.cos(math.pi * edge))
        tilt_db = self.strength * self.tilt_db_per_octave * (2 * u_tilt - 1)
        octaves = torch.log2(freqs.clamp_min(100.0) / 1000.0)
        gain = gain * 10 ** (tilt_db[:, None] * octaves[None] / 20)
        return torch.fft.irfft(torch.fft.rfft(wave, dim=1) * gain, n=n, dim=1)

    def _noise(self, wave: torch.Tensor, lengths: torch.Tensor, u: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        inside = torch.arange(wave.shape[1], device=wave.device)[None] < lengths[:, None]
        power = (wave.detach().pow(2) * inside).sum(1) / lengths.clamp_min(1)
        low, high = self.snr_db
        snr = high - self.strength * (high - low) * u
        sigma = (power / 10 ** (snr / 10)).sqrt()
        # the noise itself comes from a device generator seeded from `generator`: resumable, and no host copy
        seed = int(torch.randint(2**62, (1,), generator=generator))
        noise = torch.randn(wave.shape, generator=torch.Generator(wave.device).manual_seed(seed), device=wave.device)
        return wave + sigma[:, None] * noise * inside
