"""KVoiceWalk's hybrid scorer: the seed's formula and numbers, its early exit as staged scoring, resume."""
from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from scorers.features import extract_features_librosa
from scorers.hybrid import OTHER_TEXT, HybridScorer, weighted_harmonic_mean
from voicesearch.errors import InputError
from voicesearch.renderer import Renders
from voicesearch.types import AudioBatch, TargetSpeech

RATE = 24000
PITCH = [1.0, 1.3, 0.8]  # voice k = the target speaker's audio played at this speed


class VoiceRenderer:
    """Pack k speaks a real clip of the target speaker, resampled by PITCH[k]; text 0 and 1 are different clips.

    Records which voices were rendered with which text."""

    sample_rate, device = RATE, torch.device("cpu")

    def __init__(self, wave: np.ndarray, texts: list[str]):
        import soxr

        self.texts = texts
        lines = [wave[8 * RATE : 11 * RATE], wave[14 * RATE : 17 * RATE]]
        self.audio = [[torch.from_numpy(soxr.resample(line, RATE, int(RATE / p)).astype(np.float32)) for p in PITCH]
                      for line in lines]
        self.log: list[tuple[int, list[int]]] = []

    def render(self, packs, text, *, speed=1.0, differentiable=False):
        line = self.texts.index(text)
        voices = packs[:, 0, 0].long().tolist()
        self.log.append((line, voices))
        return AudioBatch.from_list([self.audio[line][v] for v in voices], RATE)


def packs_of(*voices: int) -> torch.Tensor:
    return torch.tensor(voices, dtype=torch.float32)[:, None, None].expand(-1, 510, 256).clone()


@pytest.fixture(scope="module")
def wave(targets_dir) -> np.ndarray:
    data, sr = sf.read(targets_dir / "kvoicewalk_example_target.wav", dtype="float32")
    assert sr == RATE
    return data


@pytest.fixture(scope="module")
def target(wave) -> TargetSpeech:
    return TargetSpeech([torch.from_numpy(wave[: 6 * RATE])], ["The old lighthouse keeper never imagined"], RATE)


@pytest.fixture(scope="module")
def scorer_and_state(target):
    scorer = HybridScorer(speaker="resemblyzer")
    return scorer, scorer.prepare(target)


def test_texts_are_transcript_then_the_seeds_other_text(scorer_and_state, target):
    scorer, _ = scorer_and_state
    assert scorer.texts(target) == [target.text, OTHER_TEXT]
    assert OTHER_TEXT.startswith("If you mix vinegar, baking soda,") and OTHER_TEXT.endswith("on a miniature scale.")


def test_weighted_harmonic_mean_is_the_seeds():
    values = torch.tensor([[0.9, 0.8, 0.5]])
    weights = torch.tensor([0.48, 0.5, 0.02])
    expected = 1.0 / (0.48 / 0.9 + 0.5 / 0.8 + 0.02 / 0.5)
    assert weighted_harmonic_mean(values, weights).item() == pytest.approx(expected)


def test_staged_scoring_reproduces_the_seed_and_resumes(scorer_and_state, wave, target):
    scorer, state = scorer_and_state
    scorer.load_state_dict({})  # fresh: no best voice yet
    renderer = VoiceRenderer(wave, scorer.texts(target))
    first = scorer.score(Renders(renderer, packs_of(0, 1, 2), scorer.texts(target)), state)
    # No best yet: every candidate is rendered with both texts (the seed's starting voice, threshold 0).
    assert renderer.log == [(0, [0, 1, 2]), (1, [0, 1, 2])]
    assert first.parts["rendered_other"].tolist() == [1, 1, 1]
    sims = first.parts["target_similarity"]
    assert int(sims.argmax()) == 0  # the unshifted speaker is the closest
    values = torch.stack([first.parts[k] for k in ("target_similarity", "self_similarity", "feature_similarity")], -1)
    assert torch.allclose(first.total, 100 * weighted_harmonic_mean(values, torch.tensor([0.48, 0.5, 0.02])))
    best = int(first.total.argmax())
    # The threshold follows the best-scoring voice's target similarity (the seed's best_results), not the max.
    assert scorer.best_target_similarity == pytest.approx(float(sims[best]))

    # Next batch: voices at or below 0.98 x that similarity skip text 1 and score 0.
    renderer.log.clear()
    batch = [1, 0, best]
    second = scorer.score(Renders(renderer, packs_of(*batch), scorer.texts(target)), state)
    keep = (sims[batch] > 0.98 * sims[best]).tolist()
    assert keep == [False, True, True]
    assert renderer.log == [(0, batch), (1, [0, best])]
    assert second.parts["rendered_other"].tolist() == [0.0, 1.0, 1.0]
    assert second.total[0] == 0 and second.parts["self_similarity"][0] == 0
    assert second.total[1:].tolist() == pytest.approx(first.total[[0, best]].tolist(), rel=1e-5)

    # Resume: a new scorer given the saved state applies the same threshold.
    saved = scorer.state_dict()
    resumed = HybridScorer(speaker="resemblyzer")
    resumed.load_state_dict(saved)
    assert resumed.threshold() == pytest.approx(0.98 * float(sims[best]))
    assert resumed.best_score == pytest.approx(float(first.total[best]))

    # A strategy starting a new incumbent (the walk's start voice) makes the loop reset the reference:
    # everything is scored in full again, as the seed scores its starting voice.
    resumed.reset_reference()
    assert resumed.threshold() == 0.0 and resumed.best_score == -math.inf


def test_numbers_match_the_seed_pipeline(scorer_and_state, wave, target):
    """One candidate scored by the seed's own recipe (resemblyzer package + librosa features) and by us."""
    from resemblyzer import VoiceEncoder, preprocess_wav

    scorer, state = scorer_and_state
    scorer.load_state_dict({})
    renderer = VoiceRenderer(wave, scorer.texts(target))
    ours = scorer.score(Renders(renderer, packs_of(2), scorer.texts(target)), state)

    encoder = VoiceEncoder("cpu", verbose=False)
    embed = lambda x: encoder.embed_utterance(preprocess_wav(x, source_sr=RATE))  # noqa: E731
    audio, audio2 = renderer.audio[0][2].numpy(), renderer.audio[1][2].numpy()
    target_sim = float(np.inner(embed(audio), embed(target.clips[0].numpy())))
    self_sim = float(np.inner(embed(audio), embed(audio2)))
    theirs, reference = extract_features_librosa(audio), extract_features_librosa(target.clips[0].numpy())
    penalty = sum(abs((theirs[k] - reference[k]) / reference[k]) for k in theirs)
    feature_sim = (100.0 - penalty) / 100.0 if penalty <= 100 else 0.01
    seed = (1.0 / (0.48 / target_sim + 0.5 / self_sim + 0.02 / feature_sim)) * 100.0

    assert ours.parts["target_similarity"][0].item() == pytest.approx(target_sim, abs=3e-3)
    assert ours.parts["self_similarity"][0].item() == pytest.approx(self_sim, abs=3e-3)
    assert ours.parts["feature_similarity"][0].item() == pytest.approx(feature_sim, abs=2e-2)
    assert ours.total[0].item() == pytest.approx(seed, rel=1e-2)


def test_bad_options_are_one_line_errors():
    with pytest.raises(InputError, match="speaker-embedding"):
        HybridScorer(speaker="dnsmos")
    with pytest.raises(InputError, match="weights"):
        HybridScorer(weights="1,2")
