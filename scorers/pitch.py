"""Pitch level: how far the candidates' median pitch is from the target's, in octaves (0 is a match).

Why a scorer of its own: Kokoro drives its harmonic source with the F0 its prosody predictor outputs, but the
source is a constant for autograd (a phase integral), so a speaker-embedding objective gives the predictor half
of a pack almost no gradient toward the right pitch. Clones found that way sat 1–7 semitones off their targets
(docs/quality.md). This scorer reads the predicted F0 the renderer reports (`AudioBatch.f0`, with gradients) and
compares its median log-pitch over voiced frames with the target's, measured once with YIN. Use it next to a
speaker embedding: `--scorer "compose:ecapa+0.3*pitch"`.

Options: `voiced_hz` (40): predicted F0 below this is unvoiced.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from voicesearch.errors import InputError
from voicesearch.options import opt_number
from voicesearch.renderer import Renders
from voicesearch.scorer import Scorer
from voicesearch.types import ScoreResult, TargetSpeech

FMIN, FMAX = 60.0, 450.0


def yin_pitch(wave: np.ndarray, sample_rate: int, frame_s: float = 0.04, hop_s: float = 0.01,
              threshold: float = 0.15) -> np.ndarray:
    """Per-frame F0 (Hz) by YIN (de Cheveigné & Kawahara 2002), NaN where unvoiced; frames quieter than 30 dB
    below the loudest are unvoiced."""
    n, hop = int(frame_s * sample_rate), int(hop_s * sample_rate)
    lo, hi = int(sample_rate / FMAX), int(sample_rate / FMIN)
    wave = np.asarray(wave, dtype=np.float64).reshape(-1)
    if wave.size < n + hi:
        return np.full(0, np.nan)
    frames = np.lib.stride_tricks.sliding_window_view(wave, n + hi)[::hop]
    energy = (frames[:, :n] ** 2).mean(1)
    spectrum = np.fft.rfft(frames, 2 * (n + hi))
    ac = np.fft.irfft(spectrum * np.conj(np.fft.rfft(frames[:, :n], 2 * (n + hi))))[:, : hi + 1]
    power = np.cumsum(frames ** 2, axis=1)
    e0 = power[:, n - 1]
    e_tau = power[:, n - 1 + np.arange(hi + 1)] - np.concatenate([np.zeros((len(frames), 1)), power[:, : hi]], 1)
    diff = e0[:, None] + e_tau - 2 * ac  # d(tau) = sum (x_t - x_{t+tau})^2
    cmnd = np.ones_like(diff)
    cumulative = np.cumsum(diff[:, 1:], axis=1)
    cmnd[:, 1:] = diff[:, 1:] * np.arange(1, hi + 1) / np.maximum(cumulative, 1e-12)
    f0 = np.full(len(frames), np.nan)
    loud = energy > energy.max() * 1e-3
    for i in np.nonzero(loud)[0]:
        below = np.nonzero(cmnd[i, lo:] < threshold)[0]
        if below.size == 0:
            continue
        tau = lo + below[0]
        while tau + 1 <= hi and cmnd[i, tau + 1] < cmnd[i, tau]:  # down to the local minimum
            tau += 1
        if 1 <= tau < hi:  # parabolic interpolation
            a, b, c = cmnd[i, tau - 1], cmnd[i, tau], cmnd[i, tau + 1]
            shift = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c != 0 else 0.0
            f0[i] = sample_rate / (tau + shift)
    return f0


def log2_pitch(wave: np.ndarray, sample_rate: int) -> float:
    """Median log2 F0 of the voiced frames, in log2 Hz (the median shrugs off YIN's octave errors; on the 9 dev-set
    clips it is within 0.1–0.7 semitones of librosa's pYIN, 1.8 on the noisy 1961 recording)."""
    f0 = yin_pitch(wave, sample_rate)
    f0 = f0[np.isfinite(f0)]
    if f0.size < 10:
        raise InputError("the target has almost no voiced speech to measure its pitch; give a clip of speech")
    return float(np.median(np.log2(f0)))


class PitchScorer(Scorer):
    """−|median log2 F0 of each render − the target's| (octaves): 0 at the target's pitch level."""

    name: ClassVar[str] = "pitch"
    differentiable: ClassVar[bool] = True
    text_independent: ClassVar[bool] = True

    def __init__(self, device: str | torch.device = "cpu", voiced_hz: Any = 40.0, **options: Any):
        super().__init__(device, **options)
        self.voiced_hz = opt_number(voiced_hz, "voiced_hz", float, 0.0)

    def prepare(self, target: TargetSpeech) -> float:
        clip = torch.cat([c.reshape(-1) for c in target.clips]).detach().cpu().numpy()
        return log2_pitch(clip, target.sample_rate)

    def score(self, renders: Renders, state: float) -> ScoreResult:
        audio = renders.audio(0)
        if audio.f0 is None:
            raise InputError("the pitch scorer needs a renderer that reports its F0 (kokoro does; kokoro-onnx does not)")
        f0 = audio.f0.float()
        voiced = f0 > self.voiced_hz
        if not bool(voiced.any(1).all()):
            raise InputError("a render has no voiced frame: the pitch scorer needs speech (check the text)")
        logs = torch.where(voiced, torch.log2(f0.clamp_min(self.voiced_hz)), torch.full_like(f0, float("nan")))
        off = torch.nanmedian(logs, dim=1).values - state
        return ScoreResult(total=-off.abs(), parts={"semitones": 12 * off.detach()})
