"""Scorer composition: formulas, a third-party-style scorer next to a built-in, shared texts and renders."""
from __future__ import annotations

import pytest
import torch

from scorers.compose import ComposedScorer, Floor, HMean, Leaf, Sum, parse_formula
from voicesearch import registry
from voicesearch.errors import InputError
from voicesearch.renderer import Renders
from voicesearch.scorer import Scorer
from voicesearch.types import AudioBatch, ScoreResult, TargetSpeech

RATE = 16000
EXTRA_TEXT = "A second sentence only the loudness judge asks for."


class TextRenderer:
    """Pack i speaks a tone at (200 + 100 i) Hz, amplitude from the pack, as long as the text (10 ms a character)."""

    sample_rate, device = RATE, torch.device("cpu")

    def __init__(self):
        self.calls: list[str] = []

    def render(self, packs, text, *, speed=1.0, differentiable=False):
        self.calls.append(text)
        n = 160 * len(text)
        t = torch.arange(n) / RATE
        freq = 200 + 100 * torch.arange(packs.shape[0])[:, None]
        wave = packs[:, 0, :1] * torch.sin(2 * torch.pi * freq * t)
        return AudioBatch(wave, torch.full((packs.shape[0],), n), RATE)


@registry.register("scorers", "test-loudness")
class LoudnessScorer(Scorer):
    """A third-party-style scorer: RMS of its text 1 (its text 0 is an extra sentence), with a call counter."""

    def __init__(self, device="cpu", gain: float = 1.0):
        super().__init__(device=device)
        self.gain, self.steps = gain, 0

    def texts(self, target):
        return [EXTRA_TEXT, target.text]

    def prepare(self, target):
        return None

    def score(self, renders, state):
        self.steps += 1
        extra, own = renders.audio(0), renders.audio(1)
        assert extra.lengths[0] == 160 * len(EXTRA_TEXT) and own.lengths[0] == 160 * len(renders.texts[1])
        rms = own.wave.pow(2).mean(-1).sqrt() * self.gain
        return ScoreResult(total=rms, parts={"rms": rms})

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


@pytest.fixture(scope="module")
def target() -> TargetSpeech:
    t = torch.arange(RATE) / RATE
    return TargetSpeech([0.5 * torch.sin(2 * torch.pi * 300 * t)], ["The target says this."], RATE)


def test_formulas_parse():
    assert parse_formula("resemblyzer") == Leaf("resemblyzer")
    assert parse_formula("0.7*resemblyzer + 0.3*ecapa") == Sum([(0.7, Leaf("resemblyzer")), (0.3, Leaf("ecapa"))])
    assert parse_formula("hmean(resemblyzer,2*ecapa)") == HMean([(1.0, Leaf("resemblyzer")), (2.0, Leaf("ecapa"))])
    assert parse_formula("resemblyzer+floor(dnsmos,3.0)") == Sum([(1.0, Leaf("resemblyzer")), (1.0, Floor(Leaf("dnsmos"), 3.0))])
    for bad in ("", "0.7*", "hmean(a,", "floor(dnsmos)", "a b", "0.5*a+*b", "a+$"):
        with pytest.raises(InputError, match="scorer formula"):
            parse_formula(bad)


def test_compose_a_plugin_with_a_builtin_on_shared_renders(target):
    scorer = registry.get("scorers", "compose:0.5*test-loudness+2*features")(device="cpu")
    texts = scorer.texts(target)
    assert texts == [EXTRA_TEXT, target.text]  # united; the target transcript is rendered once
    state = scorer.prepare(target)
    renderer = TextRenderer()
    packs = torch.tensor([0.5, 0.1])[:, None, None].expand(2, 510, 256)
    result = scorer.score(Renders(renderer, packs, texts), state)
    assert sorted(renderer.calls) == sorted(texts)  # each text rendered once for both sub-scorers
    assert set(result.parts) >= {"test-loudness", "features", "test-loudness/rms", "features/feature_similarity"}
    assert torch.allclose(result.total, 0.5 * result.parts["test-loudness"] + 2 * result.parts["features"])
    assert result.parts["test-loudness"][0] > result.parts["test-loudness"][1]
    assert not scorer.differentiable


def test_hmean_floor_options_and_resume(target):
    scorer = ComposedScorer(formula="hmean(test-loudness,3*test-loudness) + floor(test-loudness, 0.3)",
                            **{"test_loudness.gain": 2.0})  # as --scorer-opt test-loudness.gain=2 arrives
    state = scorer.prepare(target)
    packs = torch.tensor([0.5, 0.1])[:, None, None].expand(2, 510, 256)
    result = scorer.score(Renders(TextRenderer(), packs, scorer.texts(target)), state)
    rms = result.parts["test-loudness"]
    assert torch.allclose(rms, 2.0 * torch.tensor([0.5, 0.1]) / 2**0.5, atol=1e-3)  # gain option reached it
    assert torch.allclose(result.total, rms + (rms - 0.3).clamp_max(0))  # hmean of equals is itself; floor penalises
    saved = scorer.state_dict()
    assert saved == {"test-loudness": {"steps": 1}}
    fresh = ComposedScorer(formula="hmean(test-loudness,3*test-loudness) + floor(test-loudness, 0.3)")
    fresh.load_state_dict(saved)
    assert fresh.scorers["test-loudness"].steps == 1


def test_unknown_scorer_in_a_formula_is_an_input_error():
    with pytest.raises(InputError, match="unknown scorer"):
        ComposedScorer(variant="0.5*resemblyzer+0.5*no-such-scorer")
    with pytest.raises(InputError, match="needs a formula"):
        ComposedScorer()
    with pytest.raises(InputError, match="names no scorer"):
        ComposedScorer(variant="test-loudness", **{"ecapa.seed": 1})
