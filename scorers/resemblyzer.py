"""Resemblyzer (GE2E d-vector, 256-d) speaker similarity, batched in torch and differentiable.

Same network and weights as `resemblyzer.VoiceEncoder` (the `pretrained.pt` shipped in the
resemblyzer wheel), same pipeline as `embed_utterance(preprocess_wav(wav, sr))`, but for a whole
batch at once on any device:

1. resample to 16 kHz (`voicesearch.resample`, Kaiser sinc, width 32, rolloff 0.98; the reference
   uses librosa's soxr_hq),
2. volume normalisation to -30 dBFS, increase only (as `normalize_volume(..., increase_only=True)`),
3. silence trimming (`vad`): "webrtc" (default) computes the reference's webrtcvad mask (mode 3,
   30 ms windows, moving average 8, dilation 7) on a detached CPU copy and keeps the same samples
   with differentiable indexing (costs one device->host copy per batch); "none" skips it
   (all on the device, but further from the reference: see below),
4. power mel spectrogram, 40 bands, n_fft 400 / hop 160, Hann, centred, Slaney mel basis from
   librosa (the reference feeds the power mel, not its log, to the LSTM),
5. 1.6 s partial windows placed by the reference rule (rate 1.3/s, last one kept when ≥ 75 % covered),
   all partials of all items in one LSTM forward, per-item mean by `index_add`, L2 norm.

Targets (`embed_clips`) are resampled with librosa (soxr_hq) as `preprocess_wav` does, then take the
same path with the webrtcvad trim. Only `pretrained.pt` is taken from the resemblyzer package (its
modules are not imported: `resemblyzer.audio` imports a SciPy namespace deprecated for SciPy 2.0).
Differences from the reference: the resampling filter (candidates only; the webrtcvad decisions
are the same on the clips tested) and float rounding in the STFT: cosine to the reference embedding
≥ 0.9999 on the example target and Kokoro renders (tests/test_scorer_resemblyzer.py). With
`vad="none"` the cosine to the reference drops to ~0.98-0.99 on Kokoro renders (their leading and
trailing silence and pauses are kept), which is why "webrtc" is the default.

`backend="package"` (or the name `resemblyzer:package`, e.g. `hybrid` with `speaker=resemblyzer:package`) runs the
reference itself instead: the resemblyzer package's `VoiceEncoder` on the scorer's device and `preprocess_wav` on
host numpy, one clip at a time, as KVoiceWalk does. Not batched, not differentiable: for baselines and checks.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from voicesearch.errors import InputError
from voicesearch.packagefiles import package_file
from voicesearch.types import AudioBatch

from .embedding import EmbeddingScorer, SpeakerEmbedder

SAMPLE_RATE = 16000
HOP = 160  # 10 ms
N_FFT = 400  # 25 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s
VAD_WINDOW = 480  # 30 ms
VAD_AVERAGE_WIDTH = 8
VAD_MAX_SILENCE = 6
TARGET_DBFS = -30.0
INT16_MAX = 2**15 - 1


def weights_path() -> Path:
    """`resemblyzer/pretrained.pt` from the installed wheel (found without importing the package)."""
    return package_file("resemblyzer", "pretrained.pt", "pip install resemblyzer (it ships the weights)")


def partial_starts(n_samples: int, rate: float = 1.3, min_coverage: float = 0.75) -> list[int]:
    """Start frames of the 160-frame partials, as `VoiceEncoder.compute_partial_slices`."""
    n_frames = math.ceil((n_samples + 1) / HOP)
    frame_step = int(np.round((SAMPLE_RATE / rate) / HOP))
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + frame_step + 1), frame_step))
    coverage = (n_samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < min_coverage and len(starts) > 1:
        starts.pop()
    return starts


def webrtc_voiced_windows(pcm: np.ndarray) -> np.ndarray:
    """`trim_long_silences`' decision per 30 ms window of int16 `pcm` (its last partial window dropped)."""
    import webrtcvad
    from scipy.ndimage import binary_dilation

    raw = pcm[: len(pcm) - len(pcm) % VAD_WINDOW].tobytes()
    vad = webrtcvad.Vad(3)
    step = VAD_WINDOW * 2
    flags = np.array([vad.is_speech(raw[i : i + step], SAMPLE_RATE) for i in range(0, len(raw), step)], dtype=float)
    width = VAD_AVERAGE_WIDTH
    padded = np.concatenate((np.zeros((width - 1) // 2), flags, np.zeros(width // 2)))
    csum = np.cumsum(padded)
    csum[width:] = csum[width:] - csum[:-width]
    voiced = np.round(csum[width - 1 :] / width).astype(bool)
    return binary_dilation(voiced, np.ones(VAD_MAX_SILENCE + 1))


def webrtc_keep_mask(wav: np.ndarray) -> np.ndarray:
    """Boolean mask over `wav[: len - len % 480]` of the samples `trim_long_silences` keeps."""
    return np.repeat(webrtc_voiced_windows(np.round(wav * INT16_MAX).astype(np.int16)), VAD_WINDOW)


class ResemblyzerEmbedder(SpeakerEmbedder):
    """Batched GE2E speaker encoder: `embed(AudioBatch) -> (B, 256)` unit vectors (see module doc)."""

    sample_rate: ClassVar[int] = SAMPLE_RATE
    dim: ClassVar[int] = 256
    # Closer to librosa's soxr_hq passband than the default: cosine to the reference 0.9993 -> 0.99999 on renders.
    resample_width: ClassVar[int] = 32
    resample_rolloff: ClassVar[float] = 0.98

    def __init__(self, vad: str = "webrtc", rate: float = 1.3, min_coverage: float = 0.75):
        super().__init__()
        if vad not in ("webrtc", "none"):
            raise InputError(f"resemblyzer vad must be 'webrtc' or 'none', got {vad!r}")
        self.vad, self.rate, self.min_coverage = vad, rate, min_coverage
        self.lstm = nn.LSTM(N_MELS, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)["model_state"]
        # The GE2E loss scalars are training-only; every network key must be used.
        state = {k: v for k, v in state.items() if k not in ("similarity_weight", "similarity_bias")}
        self.load_state_dict(state, strict=True)
        import librosa

        mel = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS)
        self.register_buffer("mel_basis", torch.from_numpy(mel).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True), persistent=False)

    def _normalize_volume(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        rms = (wave.pow(2).sum(1) / lengths.clamp_min(1)).sqrt().clamp_min(1e-7)
        gain = (10 ** (TARGET_DBFS / 20) / rms).clamp_min(1.0)  # increase only
        return wave * gain[:, None]

    def _trim_silences(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Only int16 PCM goes to the host (webrtcvad is CPU code) and only one flag per 30 ms comes back; the
        # samples are compacted on the device. int16 wraps like the reference's numpy astype.
        pcm = (wave.detach() * INT16_MAX).round().to(torch.int32)
        pcm = ((pcm + 2**15) % 2**16 - 2**15).to(torch.int16).cpu().numpy()
        windows = [webrtc_voiced_windows(pcm[i, : int(n)]) for i, n in enumerate(lengths.tolist())]
        voiced = np.zeros((len(windows), max(1, max(len(w) for w in windows))), dtype=bool)
        for i, w in enumerate(windows):
            voiced[i, : len(w)] = w
        keep = torch.from_numpy(voiced).to(wave.device).repeat_interleave(VAD_WINDOW, dim=1)
        keep = nn.functional.pad(keep, (0, max(0, wave.shape[1] - keep.shape[1])))[:, : wave.shape[1]]
        new_lengths = keep.sum(1)
        rows, src = keep.nonzero(as_tuple=True)
        dst = keep.cumsum(1)[rows, src] - 1
        out = wave.new_zeros(wave.shape[0], max(1, int(new_lengths.max())))
        return out.index_put((rows, dst), wave[rows, src]), new_lengths

    def mel_frames(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, T) 16 kHz -> (B, frames, 40) power mel, as `resemblyzer.audio.wav_to_mel_spectrogram`."""
        spec = torch.stft(wave, N_FFT, HOP, window=self.window, center=True, pad_mode="constant", return_complex=True)
        power = spec.real.pow(2) + spec.imag.pow(2)
        return torch.matmul(self.mel_basis, power).transpose(1, 2)

    def forward_embed(self, audio: AudioBatch, vad: str | None = None) -> torch.Tensor:
        wave, lengths = audio.wave, audio.lengths
        in_range = torch.arange(wave.shape[1], device=wave.device)[None] < lengths[:, None]
        wave = self._normalize_volume(wave * in_range, lengths)  # zero resampling tails past each length
        if (vad or self.vad) == "webrtc":
            wave, lengths = self._trim_silences(wave, lengths)
        starts = [partial_starts(int(n), self.rate, self.min_coverage) for n in lengths.tolist()]
        last_frame = max(s[-1] for s in starts) + PARTIAL_FRAMES
        wave = nn.functional.pad(wave, (0, max(0, last_frame * HOP - wave.shape[1])))
        mels = self.mel_frames(wave)
        item = torch.tensor([i for i, s in enumerate(starts) for _ in s], device=wave.device)
        first = torch.tensor([f for s in starts for f in s], device=wave.device)
        frames = first[:, None] + torch.arange(PARTIAL_FRAMES, device=wave.device)
        partials = mels[item[:, None], frames]  # (P, 160, 40)
        # cuDNN runs LSTM backward only in training mode; dropout is 0, so the output is the same.
        self.lstm.train(torch.is_grad_enabled())
        _, (hidden, _) = self.lstm(partials)
        partial_emb = torch.relu(self.linear(hidden[-1]))
        partial_emb = partial_emb / partial_emb.norm(dim=1, keepdim=True).clamp_min(1e-12)
        total = partial_emb.new_zeros(len(starts), partial_emb.shape[1]).index_add(0, item, partial_emb)
        return total / total.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def embed_clips(self, clips: list[torch.Tensor], sample_rate: int) -> torch.Tensor:
        """Targets: resampled with librosa (soxr_hq) exactly as `preprocess_wav`, then the batch path."""
        import librosa

        waves = [c.detach().cpu().float().numpy() for c in clips]
        if sample_rate != SAMPLE_RATE:
            waves = [librosa.resample(w, orig_sr=sample_rate, target_sr=SAMPLE_RATE) for w in waves]
        batch = AudioBatch.from_list([torch.from_numpy(np.ascontiguousarray(w)) for w in waves], SAMPLE_RATE)
        with torch.no_grad():
            return self.forward_embed(self.to_rate(batch), vad="webrtc")


class PackageResemblyzerEmbedder(SpeakerEmbedder):
    """The reference pipeline itself, one clip at a time: `VoiceEncoder.embed_utterance(preprocess_wav(wav, sr))`.

    Each clip is copied to host numpy; `preprocess_wav` resamples it to 16 kHz with librosa (soxr_hq), normalises
    the volume and trims silences with webrtcvad; `embed_utterance` computes the mel spectrogram with librosa on
    the CPU and runs the LSTM on `device` (as KVoiceWalk's `FitnessScorer`, whose `VoiceEncoder()` takes the GPU
    when there is one).
    """

    # Audio is taken at the renderer's rate (Kokoro: 24 kHz) so that the resampling is preprocess_wav's own.
    sample_rate: ClassVar[int] = 24000
    dim: ClassVar[int] = 256

    def __init__(self, device: str | torch.device = "cpu"):
        super().__init__()
        try:
            from resemblyzer import VoiceEncoder
        except ImportError as e:
            raise InputError(f"the resemblyzer package cannot be imported ({e}): pip install resemblyzer webrtcvad") from None
        self.encoder = VoiceEncoder(device=torch.device(device), verbose=False)

    def embed(self, audio: AudioBatch) -> torch.Tensor:
        return self.forward_embed(audio)  # no torch resampling: preprocess_wav resamples from the clip's own rate

    def forward_embed(self, audio: AudioBatch) -> torch.Tensor:
        from resemblyzer import preprocess_wav

        out = [self.encoder.embed_utterance(preprocess_wav(audio.item(i).detach().float().cpu().numpy(),
                                                           source_sr=audio.sample_rate))
               for i in range(len(audio))]
        if not out:
            return torch.zeros(0, self.dim, device=self.device)
        return torch.from_numpy(np.stack(out)).float().to(self.device)


BACKENDS = ("torch", "package")


class ResemblyzerScorer(EmbeddingScorer):
    """Cosine similarity of Resemblyzer d-vectors to the target speaker (KVoiceWalk's target similarity).

    Options: `vad` ("webrtc" | "none", candidates, torch backend only), `backend` ("torch": the batched port |
    "package": the resemblyzer package per clip, also reachable as `resemblyzer:package`), plus `EmbeddingScorer`'s
    (`device`, `target_sampling`, `seed`, `target_window_s`).
    """

    name: ClassVar[str] = "resemblyzer"
    text_independent: ClassVar[bool] = True  # a speaker embedding: any words will do (voicesearch.cpu)

    def __init__(self, device: str | torch.device = "cpu", vad: str = "webrtc", backend: str = "torch",
                 variant: str | None = None, **options: Any):
        super().__init__(device=device, **options)
        if vad not in ("webrtc", "none"):
            raise InputError(f"resemblyzer vad must be 'webrtc' or 'none', got {vad!r}")
        backend = str(variant or backend)
        if backend not in BACKENDS:
            raise InputError(f"resemblyzer backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if backend == "package" and vad != "webrtc":
            raise InputError("resemblyzer vad='none' applies to the torch backend; the package always trims with webrtcvad")
        self.vad, self.backend = vad, backend
        self.differentiable = backend == "torch"

    def build_embedder(self) -> SpeakerEmbedder:
        if self.backend == "package":
            return PackageResemblyzerEmbedder(self.device)
        return ResemblyzerEmbedder(vad=self.vad)
