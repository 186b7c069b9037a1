"""WavLM x-vector scorer on a tiny random WavLMForXVector (the real weights are hub-only).

Checks the code path the real model takes: batching with masks equals per-item embedding, the head
equals transformers' own forward on an unpadded item, gradients reach the waveform, loading from a
local folder works and a missing hub/folder is a one-line InputError.
"""
from __future__ import annotations

import pytest
import torch

from scorers.wavlm import WavLMEmbedder, WavLMScorer
from voicesearch.errors import InputError
from voicesearch.renderer import Renders
from voicesearch.types import AudioBatch, TargetSpeech


def tiny_config():
    from transformers import WavLMConfig

    return WavLMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7,
                       num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, tdnn_dim=(16, 16, 16, 16, 48),
                       xvector_output_dim=24, num_buckets=32, max_bucket_distance=80, use_weighted_layer_sum=True,
                       initializer_range=0.2)


@pytest.fixture(scope="module")
def model():
    from transformers import WavLMForXVector

    torch.manual_seed(0)
    return WavLMForXVector(tiny_config()).eval()


@pytest.fixture(scope="module")
def waves() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    t = torch.arange(24000) / 16000
    return [0.3 * torch.sin(2 * torch.pi * f * t[:n]) + 0.05 * torch.randn(n, generator=g)
            for f, n in ((140.0, 16000), (210.0, 24000), (95.0, 9000))]


def test_batched_equals_per_item(model, waves):
    embedder = WavLMEmbedder(model, normalize=True)
    batched = embedder.embed(AudioBatch.from_list(waves, 16000))
    assert batched.shape == (3, 24)
    assert torch.allclose(batched.norm(dim=-1), torch.ones(3), atol=1e-5)
    for i, w in enumerate(waves):
        alone = embedder.embed(AudioBatch.from_list([w], 16000))[0]
        assert torch.allclose(batched[i], alone, atol=1e-5), i


def test_head_equals_transformers_forward_on_one_item(model, waves):
    embedder = WavLMEmbedder(model, normalize=False)
    ours = embedder.embed(AudioBatch.from_list(waves[:1], 16000))[0]
    with torch.no_grad():
        theirs = model(waves[0][None]).embeddings[0]
    assert torch.allclose(ours, theirs / theirs.norm(), atol=1e-5)


def test_gradients_reach_the_waveform(model, waves):
    embedder = WavLMEmbedder(model, normalize=True)
    wave = AudioBatch.from_list(waves[:2], 16000).wave.clone().requires_grad_(True)
    lengths = torch.tensor([16000, 24000])
    target = embedder.embed(AudioBatch.from_list(waves[2:], 16000))[0]
    sim = embedder.embed(AudioBatch(wave, lengths, 16000)) @ target
    sim.sum().backward()
    assert torch.isfinite(wave.grad).all()
    assert wave.grad[0, :16000].abs().sum() > 0 and wave.grad[1].abs().sum() > 0
    assert wave.grad[0, 16000:].abs().max() == 0  # padding does not matter


def test_scorer_with_a_model_object_and_a_local_folder(model, waves, tmp_path):
    model.save_pretrained(tmp_path / "tiny-wavlm")
    target = TargetSpeech([waves[1]], ["words"], 16000)

    class WaveRenderer:
        sample_rate, device = 16000, torch.device("cpu")

        def render(self, packs, text, *, speed=1.0, differentiable=False):
            return AudioBatch.from_list([waves[int(i)] for i in packs[:, 0, 0]], 16000)

    packs = torch.tensor([1.0, 0.0])[:, None, None].expand(2, 510, 256)
    for source in (model, tiny_config(), str(tmp_path / "tiny-wavlm")):
        scorer = WavLMScorer(model=source)
        state = scorer.prepare(target)
        result = scorer.score(Renders(WaveRenderer(), packs, scorer.texts(target)), state)
        assert result.total.shape == (2,) and result.embeddings.shape == (2, 24)
        if not isinstance(source, type(tiny_config())):  # same weights: the target's own audio scores 1
            assert result.total[0] == pytest.approx(1.0, abs=1e-5)
    assert WavLMScorer.differentiable


def test_missing_weights_say_what_to_do(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        WavLMScorer(model=str(tmp_path / "nowhere"))
    offline = WavLMScorer(model="someone/no-such-wavlm-model")  # HF_HUB_OFFLINE=1 in tests
    with pytest.raises(InputError, match="model=/path"):
        offline.prepare(TargetSpeech([torch.zeros(16000)], ["x"], 16000))
