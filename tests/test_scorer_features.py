"""KVoiceWalk feature set: the batched torch implementation against the librosa reference on real speech.

Agreement stated and checked here (float32 audio, 24 kHz):
- every feature within 0.1 % relative, except
- spectral_contrast mean/std: 2 % (the valley of a band whose energy sits at the float32 FFT noise floor,
  e.g. above the cut-off of band-limited audio, differs between FFT libraries; dB of tiny numbers),
- tonnetz mean/std: 2e-4 absolute on values of ±0.01 (the CQT halves the rate per octave with
  voicesearch.resample instead of soxr), audio_mean: 1e-7 absolute (a mean of ~1e-5 over 300k samples);
- the penalty (Σ relative differences) between two clips within 1 %.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from scorers.features import (FEATURE_NAMES, FeatureScorer, TorchFeatures, extract_features_librosa, feature_penalty,
                              feature_similarity)
from voicesearch.renderer import Renders
from voicesearch.types import AudioBatch, TargetSpeech

LOOSE_RELATIVE = {"spectral_contrast_mean": 2e-2, "spectral_contrast_std": 2e-2}
ABSOLUTE = {"tonnetz_mean": 2e-4, "tonnetz_std": 2e-4, "audio_mean": 1e-7}


@pytest.fixture(scope="module")
def clips(targets_dir) -> list[np.ndarray]:
    """Two real clips: the first 10 s of the example target, and 10 s from its end played 12 % faster/higher."""
    import soxr

    wave, sr = sf.read(targets_dir / "kvoicewalk_example_target.wav", dtype="float32")
    assert sr == 24000
    other = soxr.resample(wave[-int(11.2 * sr):], sr, int(sr / 1.12)).astype(np.float32)
    return [wave[: 10 * sr], other]


@pytest.fixture(scope="module")
def extractor() -> TorchFeatures:
    return TorchFeatures()


@pytest.fixture(scope="module")
def torch_features(clips, extractor) -> torch.Tensor:
    return extractor(AudioBatch.from_list([torch.from_numpy(c) for c in clips], 24000))


def test_feature_list_is_the_seeds():
    assert len(FEATURE_NAMES) == 106 and len(set(FEATURE_NAMES)) == 106
    assert FEATURE_NAMES[:4] == ("rms_energy", "zero_crossing_rate", "spectral_centroid_mean", "spectral_centroid_std")
    assert FEATURE_NAMES[10:14] == ("mfcc1_mean", "mfcc1_std", "mfcc2_mean", "mfcc2_std")
    assert FEATURE_NAMES[36:38] == ("mfcc1_delta_mean", "mfcc1_delta_std")
    assert FEATURE_NAMES[62:66] == ("chroma_mean", "chroma_std", "chroma_1_mean", "chroma_1_std")
    assert FEATURE_NAMES[-4:] == ("audio_mean", "audio_std", "audio_skew", "audio_kurtosis")


def test_torch_features_match_librosa_reference(clips, torch_features):
    reference = torch.tensor([list(extract_features_librosa(c).values()) for c in clips], dtype=torch.float64)
    for j, name in enumerate(FEATURE_NAMES):
        ref, got = reference[:, j], torch_features[:, j]
        if name in ABSOLUTE:
            assert (got - ref).abs().max() <= ABSOLUTE[name], (name, ref, got)
        else:
            tol = LOOSE_RELATIVE.get(name, 1e-3)
            assert ((got - ref).abs() <= tol * ref.abs() + 1e-9).all(), (name, ref, got)
    ref_penalty = feature_penalty(reference[1:], reference[0])
    assert torch.allclose(feature_penalty(torch_features[1:], torch_features[0]), ref_penalty, rtol=1e-2)
    assert ref_penalty.item() > 10  # the two clips really differ


def test_padding_in_a_batch_changes_nothing(clips, extractor, torch_features):
    short = clips[1][: 3 * 24000]
    alone = extractor(AudioBatch.from_list([torch.from_numpy(short)], 24000))
    batched = extractor(AudioBatch.from_list([torch.from_numpy(clips[0]), torch.from_numpy(short)], 24000))
    assert torch.allclose(batched[0], torch_features[0], rtol=1e-5, atol=1e-9)
    assert torch.allclose(batched[1], alone[0], rtol=1e-5, atol=1e-9)


def test_cpu_slices_change_nothing(clips, torch_features):
    """On a CPU a large batch runs in slices, each cut to its own longest clip: the features are the same."""
    sliced = TorchFeatures()
    sliced.CPU_SLICE_SAMPLES = 24000  # one clip per slice
    out = sliced(AudioBatch.from_list([torch.from_numpy(c) for c in reversed(clips)], 24000))
    assert torch.allclose(out.flip(0), torch_features, rtol=1e-5, atol=1e-9)


def test_similarity_is_the_seeds_formula():
    target = torch.tensor([2.0, -4.0, 0.5, 0.0], dtype=torch.float64)
    same = target.clone()
    near = torch.tensor([2.2, -4.0, 0.25, 0.0], dtype=torch.float64)  # 0.1 + 0 + 0.5 + 0
    far = target * 300
    far[3] = 0
    zero_target_broken = torch.tensor([2.0, -4.0, 0.5, 1e-9], dtype=torch.float64)
    nan = torch.tensor([math.nan, -4.0, 0.5, 0.0], dtype=torch.float64)
    feats = torch.stack([same, near, far, zero_target_broken, nan])
    assert torch.allclose(feature_penalty(feats[:2], target), torch.tensor([0.0, 0.6], dtype=torch.float64))
    sim = feature_similarity(feats, target)
    assert torch.allclose(sim, torch.tensor([1.0, 0.994, 0.01, 0.01, 0.01], dtype=torch.float64))


def test_feature_scorer_prefers_the_target_voice(clips, targets_dir):
    class ClipRenderer:
        sample_rate, device = 24000, torch.device("cpu")

        def render(self, packs, text, *, speed=1.0, differentiable=False):
            return AudioBatch.from_list([torch.from_numpy(clips[int(i)][: 4 * 24000]) for i in packs[:, 0, 0]], 24000)

    target = TargetSpeech([torch.from_numpy(clips[0][: 4 * 24000])], ["words"], 24000)
    scorer = FeatureScorer()
    state = scorer.prepare(target)
    packs = torch.tensor([1.0, 0.0])[:, None, None].expand(2, 510, 256)
    result = scorer.score(Renders(ClipRenderer(), packs, scorer.texts(target)), state)
    assert result.total[1] == pytest.approx(1.0) and result.total[0] < 1.0
    assert set(result.parts) == {"feature_similarity", "feature_penalty"}


def test_halving_is_voicesearch_resample(clips, extractor):
    """The CQT's octave-by-octave 2:1 decimation (a blocked matmul) computes voicesearch.resample(y, 2, 1)."""
    from voicesearch.resample import resample

    y = torch.from_numpy(np.stack([clips[0][: 3 * 24000 + 777], clips[1][: 3 * 24000 + 777]]))  # odd length
    halved, reference = extractor._halve(y), resample(y, 2, 1)
    assert halved.shape == reference.shape == (2, (y.shape[1] + 1) // 2)
    assert torch.allclose(halved, reference, rtol=0, atol=1e-6)


def test_batched_tempo_is_librosas(clips, extractor):
    """The batched tempo estimate (padded envelopes of different lengths) picks librosa.feature.tempo's BPM for each
    item, and both FFT paths of its autocorrelation (scipy on CPUs, torch elsewhere) agree with librosa's."""
    import librosa

    from scorers.features import _autocorrelate

    pieces = [clips[0], clips[1][: 7 * 24000], clips[0][3 * 24000 : 9 * 24000]]
    envs = [librosa.onset.onset_strength(y=p, sr=24000, hop_length=512).astype(np.float32) for p in pieces]
    n_frames = torch.tensor([len(e) for e in envs])
    batch = torch.zeros(len(envs), int(n_frames.max()) + 5)
    for i, e in enumerate(envs):
        batch[i, : len(e)] = torch.from_numpy(e)
    expected = [float(librosa.feature.tempo(onset_envelope=e, sr=24000, hop_length=512)[0]) for e in envs]
    assert extractor._tempo(batch, n_frames).tolist() == expected
    assert len(set(expected)) > 1  # the items really differ

    frames = torch.from_numpy(librosa.util.frame(envs[0].astype(np.float64), frame_length=375, hop_length=40).T.copy())
    reference = torch.from_numpy(librosa.autocorrelate(frames.numpy(), axis=-1))
    for scipy_fft in (True, False):
        assert torch.allclose(_autocorrelate(frames, scipy_fft=scipy_fft), reference, rtol=1e-9, atol=1e-9 * float(reference.abs().max()))
