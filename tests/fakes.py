"""Cheap real components for tests of the loop, run directory and CLI (no Kokoro needed).

The fake renderer turns a pack into a short "voice": a few sine partials whose frequencies and
amplitudes come from the pack's mean style row. The fake scorer compares those partials' spectra
with the target's, so better packs really do sound (spectrally) closer.
"""
from __future__ import annotations

import torch

from voicesearch.registry import register
from voicesearch.scorer import Scorer
from voicesearch.stock import StockVoices
from voicesearch.strategy import Strategy
from voicesearch.types import AudioBatch, ScoreResult, TargetSpeech

RATE = 8000


@register("renderers", "fake")
class FakeRenderer:
    """Sine partials from the pack's mean style (tests only)."""

    sample_rate = RATE

    def __init__(self, device: str = "cpu", stock_dir: str | None = None, **_: object):
        self.device = torch.device(device)
        self.weights_source = "fake sine renderer"
        self.calls = 0

    def render(self, packs, text, *, speed=1.0, differentiable=False):
        self.calls += 1
        style = packs.reshape(packs.shape[0], -1, packs.shape[-1]).mean(1)  # (B, 256)
        n = int(RATE * (0.5 + 0.01 * len(text)) / speed)
        t = torch.arange(n, dtype=torch.float32) / RATE
        freqs = 200 + 150 * torch.tanh(style[:, :4])[..., None] * torch.tensor([1.0, 2, 3, 4])[:, None] + \
            torch.tensor([0.0, 300, 700, 1200])[:, None]
        amps = torch.sigmoid(style[:, 4:8])[..., None]
        wave = (amps * torch.sin(2 * torch.pi * freqs * t)).sum(1) * 0.2
        return AudioBatch(wave, torch.full((packs.shape[0],), n, dtype=torch.long), RATE)

    def stock_voices(self) -> StockVoices:
        g = torch.Generator().manual_seed(1)
        return StockVoices([f"v{i}" for i in range(6)], torch.randn(6, 510, 256, generator=g) * 0.3)


def spectrum(wave: torch.Tensor) -> torch.Tensor:
    spec = torch.fft.rfft(wave[..., :4000], n=4000).abs()
    spec = torch.nn.functional.avg_pool1d(spec[:, None], 8)[:, 0]
    return spec / spec.norm(dim=-1, keepdim=True)


@register("scorers", "fake-spectrum")
class FakeSpectrumScorer(Scorer):
    """Cosine between magnitude spectra (tests only)."""

    def prepare(self, target: TargetSpeech):
        return spectrum(target.clips[0][None])

    def score(self, renders, state):
        audio = renders.audio(0)
        sim = (spectrum(audio.wave) * state).sum(-1)
        return ScoreResult(total=sim, parts={"similarity": sim, "loudness": audio.wave.abs().mean(-1)})


@register("strategies", "hill-climb")
class HillClimb(Strategy):
    """Gaussian hill climbing around the best point (tests only)."""

    def __init__(self, *args, step: float = 0.3, **kwargs):
        super().__init__(*args, **kwargs)
        self.step = float(step)
        self.center = self.space.from_packs(self.stock.packs.mean(0, keepdim=True))[0]
        self.best = -float("inf")

    def ask(self):
        noise = torch.randn(self.batch_size, self.space.dim, generator=self.rng)
        return self.center + self.step * noise * self.space.scale()

    def tell(self, x, result):
        i = int(result.total.argmax())
        if float(result.total[i]) > self.best:
            self.best, self.center = float(result.total[i]), x[i].clone()


def fake_target(pack_seed: int = 7) -> TargetSpeech:
    g = torch.Generator().manual_seed(pack_seed)
    pack = torch.randn(1, 510, 256, generator=g) * 0.3
    audio = FakeRenderer().render(pack, "hello world")
    return TargetSpeech([audio.item(0)], ["hello world"], RATE)


@register("transcribers", "fake-asr")
class FakeTranscriber:
    """Says how long the 16 kHz clip it heard is; `fake-asr:mute` hears nothing (tests only)."""

    description = "fake transcriber"

    def __init__(self, device: str = "cpu", variant: str | None = None):
        self.mute = variant == "mute"

    def __call__(self, wave) -> str:
        return "" if self.mute else f"a clip of {len(wave) / 16000:.1f} seconds"
