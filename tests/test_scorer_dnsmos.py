"""DNSMOS quality guard on real speech: same numbers as speechmos, clean beats noisy, batching is exact."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from scorers.dnsmos import DnsmosScorer, segments
from voicesearch.renderer import Renders
from voicesearch.types import AudioBatch, TargetSpeech


@pytest.fixture(scope="module")
def speech(targets_dir) -> np.ndarray:
    """10 s of the example target at 16 kHz (one DNSMOS segment)."""
    import soxr

    wave, sr = sf.read(targets_dir / "kvoicewalk_example_target.wav", dtype="float32")
    return soxr.resample(wave[: 10 * sr], sr, 16000).astype(np.float32)


@pytest.fixture(scope="module")
def scorer() -> DnsmosScorer:
    return DnsmosScorer()


def test_segments_follow_the_dnsmos_script():
    assert segments(np.zeros(16000 * 10, np.float32)).shape == (1, 144160)
    assert segments(np.zeros(16000 * 12, np.float32)).shape == (3, 144160)  # starts 0, 1, 2 s
    short = segments(np.arange(16000 * 3, dtype=np.float32))  # doubled until >= 9.01 s: 12 s
    assert short.shape == (3, 144160) and short[0, 48000] == 0 and short[1, 0] == 16000


def test_clean_speech_beats_noisy_speech_and_matches_speechmos(scorer, speech):
    rng = np.random.default_rng(0)
    noisy = np.clip(speech + rng.normal(0, 0.1, len(speech)).astype(np.float32), -1, 1)
    short = speech[: int(16000 * 4.6)]  # repeated once to 9.2 s: one segment
    mos = scorer.mos(AudioBatch.from_list([torch.from_numpy(x) for x in (speech, noisy, short)], 16000))
    assert mos["ovrl"][0] > 3.0 and mos["ovrl"][0] > mos["ovrl"][1] + 1.0
    assert mos["bak"][0] > mos["bak"][1] + 1.0

    import speechmos.dnsmos

    reference = speechmos.dnsmos.run(short, 16000)  # batching with padding changes nothing
    assert mos["ovrl"][2].item() == pytest.approx(reference["ovrl_mos"], abs=1e-4)
    assert mos["sig"][2].item() == pytest.approx(reference["sig_mos"], abs=1e-4)
    assert mos["bak"][2].item() == pytest.approx(reference["bak_mos"], abs=1e-4)


def test_scorer_on_renders_resamples_and_reports_parts(scorer, speech):
    class ClipRenderer:
        sample_rate, device = 24000, torch.device("cpu")

        def render(self, packs, text, *, speed=1.0, differentiable=False):
            import soxr

            return AudioBatch.from_list([torch.from_numpy(soxr.resample(speech[: 16000 * 5], 16000, 24000))], 24000)

    target = TargetSpeech([torch.zeros(24000)], ["words"], 24000)
    result = scorer.score(Renders(ClipRenderer(), torch.zeros(1, 510, 256), scorer.texts(target)), scorer.prepare(target))
    assert set(result.parts) == {"sig", "bak", "ovrl"}
    assert torch.equal(result.total, result.parts["ovrl"]) and 2.5 < result.total.item() < 5
