"""The generalization pieces of the embedding scorers: probe texts and random channels (expectation over transformations)."""
from __future__ import annotations

import pytest
import torch

from scorers.augment import ChannelAugment
from scorers.ecapa import EcapaScorer
from scorers.embedding import PROBE_TEXTS
from voicesearch.errors import InputError
from voicesearch.renderer import Renders
from voicesearch.types import AudioBatch, TargetSpeech

RATE = 16000


def voice(f0: float, seconds: float = 1.5, seed: int = 0) -> torch.Tensor:
    t = torch.arange(int(seconds * RATE)) / RATE
    phase = 2 * torch.pi * torch.cumsum(f0 + 20 * torch.sin(2 * torch.pi * 3 * t), 0) / RATE
    noise = torch.randn(t.shape, generator=torch.Generator().manual_seed(seed)) * 0.003
    return (sum(torch.sin(k * phase) / k for k in range(1, 8)) * 0.1 + noise).float()


class TextLengthRenderer:
    """Pack i speaks a harmonic voice at f0 = pack[i, 0, 0]; the text sets the duration (shorter text, shorter audio)."""

    sample_rate = RATE
    device = torch.device("cpu")

    def __init__(self):
        self.texts: list[str] = []

    def render(self, packs, text, *, speed=1.0, differentiable=False):
        self.texts.append(text)
        seconds = 0.8 + 0.02 * len(text)
        return AudioBatch.from_list([voice(float(p[0, 0]), seconds) for p in packs], RATE)


def test_augment_keeps_shapes_crops_and_differentiates():
    wave = torch.stack([voice(120), voice(220)]).requires_grad_(True)
    audio = AudioBatch(wave, torch.tensor([wave.shape[1], wave.shape[1] // 2]), RATE)
    out = ChannelAugment(1.0)(audio, torch.Generator().manual_seed(0))
    assert out.wave.shape[0] == 2 and out.sample_rate == RATE
    assert (out.lengths <= audio.lengths).all() and (out.lengths >= (0.6 * audio.lengths).long() - 1).all()
    assert not torch.allclose(out.wave[0, : out.lengths[0]], wave[0, : out.lengths[0]].detach())
    out.wave.pow(2).sum().backward()
    assert wave.grad is not None and wave.grad.abs().sum() > 0


def test_augment_is_reproducible_from_the_generator_and_off_at_zero():
    audio = AudioBatch(torch.stack([voice(150)]), torch.tensor([int(1.5 * RATE)]), RATE)
    a = ChannelAugment(1.0)(audio, torch.Generator().manual_seed(3))
    b = ChannelAugment(1.0)(audio, torch.Generator().manual_seed(3))
    c = ChannelAugment(1.0)(audio, torch.Generator().manual_seed(4))
    assert torch.equal(a.wave, b.wave) and torch.equal(a.lengths, b.lengths)
    assert not torch.equal(a.wave, c.wave)
    assert ChannelAugment(0.0)(audio, torch.Generator()) is audio


def test_probe_texts_are_rendered_and_averaged():
    target = TargetSpeech([voice(130, 3.0)], ["the target said this"], RATE)
    scorer = EcapaScorer(probes=2)
    texts = scorer.texts(target)
    assert texts == ["the target said this", *PROBE_TEXTS[:2]]
    assert len({len(t) for t in texts}) == 3  # different lengths: different pack rows
    assert EcapaScorer(probes=3, transcript=False).texts(target) == list(PROBE_TEXTS[:3])
    renderer = TextLengthRenderer()
    packs = torch.zeros(2, 510, 256)
    packs[0, :, 0], packs[1, :, 0] = 130, 260
    state = scorer.prepare(target)
    result = scorer.score(Renders(renderer, packs, texts), state)
    assert renderer.texts == texts
    per_text = torch.stack([result.parts[f"similarity/{i}"] for i in range(3)])
    assert torch.allclose(result.total, per_text.mean(0))
    assert result.total[0] > result.total[1]  # the same pitch as the target scores higher on every text
    assert (per_text[:, 0] > per_text[:, 1]).all()


def test_augmented_scores_vary_with_the_step_but_keep_the_ranking_and_resume():
    target = TargetSpeech([voice(130, 3.0)], ["hello there"], RATE)
    scorer = EcapaScorer(augment=1.0, seed=5)
    packs = torch.zeros(2, 510, 256)
    packs[0, :, 0], packs[1, :, 0] = 130, 300
    state = scorer.prepare(target)
    renders = lambda: Renders(TextLengthRenderer(), packs, ["hello there"])  # noqa: E731
    saved = scorer.state_dict()
    first = scorer.score(renders(), state).total
    second = scorer.score(renders(), state).total
    assert not torch.equal(first, second)  # a new channel each step
    assert first[0] > first[1] and second[0] > second[1]
    scorer.load_state_dict(saved)
    assert torch.equal(scorer.score(renders(), state).total, first)  # the RNG resumes exactly


@pytest.mark.parametrize("options", [{"probes": -1}, {"probes": 99}, {"probes": "x"}, {"augment": "lots"},
                                     {"augment": 5}, {"transcript": False, "probes": 0}, {"transcript": "maybe"}])
def test_bad_generalization_options_are_input_errors(options):
    with pytest.raises(InputError):
        EcapaScorer(**options)
