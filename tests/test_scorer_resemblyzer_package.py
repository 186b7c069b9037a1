"""The reference path of the Resemblyzer scorer (`resemblyzer:package`): the package's own pipeline, per clip."""
from __future__ import annotations

import pytest
import soundfile as sf
import torch

from voicesearch import registry
from voicesearch.errors import InputError
from voicesearch.types import AudioBatch


@pytest.fixture(scope="module")
def clips(targets_dir):
    wave, sr = sf.read(targets_dir / "kvoicewalk_example_target.wav", dtype="float32")
    return [torch.from_numpy(wave[: 4 * sr]), torch.from_numpy(wave[9 * sr : 12 * sr])], sr


def test_package_backend_is_the_reference_and_agrees_with_the_port(clips):
    from resemblyzer import VoiceEncoder, preprocess_wav

    waves, sr = clips
    package = registry.get("scorers", "resemblyzer:package")(device="cpu")
    assert package.backend == "package" and not package.differentiable
    emb = package.embedder.embed(AudioBatch.from_list(waves, sr))
    encoder = VoiceEncoder("cpu", verbose=False)
    for i, w in enumerate(waves):
        ref = torch.from_numpy(encoder.embed_utterance(preprocess_wav(w.numpy(), source_sr=sr)))
        assert float(ref @ emb[i]) > 0.99999
    port = registry.get("scorers", "resemblyzer")(device="cpu")
    assert port.differentiable
    assert (port.embedder.embed(AudioBatch.from_list(waves, sr)) * emb).sum(-1).min() > 0.999
    assert float(emb[0] @ emb[1]) < 0.9999  # two different clips: not a constant


def test_hybrid_takes_the_package_speaker():
    hybrid = registry.get("scorers", "hybrid")(device="cpu", speaker="resemblyzer:package", features="librosa")
    assert hybrid.speaker.backend == "package" and hybrid.speaker.embedder.sample_rate == 24000


@pytest.mark.parametrize("options, message", [({"backend": "onnx"}, "backend"), ({"backend": "package", "vad": "none"}, "vad")])
def test_bad_options(options, message):
    with pytest.raises(InputError, match=message):
        registry.get("scorers", "resemblyzer")(device="cpu", **options)
