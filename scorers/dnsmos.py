"""DNSMOS P.835 speech quality (SIG, BAK, OVRL; 1–5) with the ONNX model shipped in the speechmos wheel.

Same procedure as `speechmos.dnsmos.run` (Microsoft's DNS-Challenge script): 16 kHz audio, clips shorter
than 9.01 s are repeated up to that length, 9.01 s segments every 1 s, each segment's raw scores mapped
through the published polynomials, averaged per clip. (One difference: speechmos drops the segments
starting at 7–23 s because `int((i + 9.01) * 16000)` rounds one sample short; here every full segment
counts, so clips over 16 s can differ slightly.) All segments of a batch go through one
onnxruntime call (`sig_bak_ovr.onnx` takes (N, 144160), chunked by `max_segments`). CUDA execution provider when the scorer's
device is CUDA and onnxruntime-gpu offers it, else CPU. Not differentiable.

Total = OVRL (or `total="sig"|"bak"`). Parts: sig, bak, ovrl.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from voicesearch.errors import InputError
from voicesearch.packagefiles import package_file
from voicesearch.renderer import Renders
from voicesearch.resample import resample_batch
from voicesearch.scorer import Scorer
from voicesearch.types import AudioBatch, ScoreResult, TargetSpeech

SAMPLE_RATE = 16000
SEGMENT = int(9.01 * SAMPLE_RATE)  # 144160 samples
HOP = SAMPLE_RATE
# Raw network outputs -> MOS (P.835, non-personalised), highest power first.
POLY_SIG = (-0.08397278, 1.22083953, 0.0052439)
POLY_BAK = (-0.13166888, 1.60915514, -0.39604546)
POLY_OVRL = (-0.06766283, 1.11546468, 0.04602535)


def model_path() -> Path:
    """`speechmos/dnsmos_models/sig_bak_ovr.onnx`, found without importing speechmos."""
    return package_file("speechmos", "dnsmos_models/sig_bak_ovr.onnx", "pip install speechmos (it ships the DNSMOS models)")


def segments(wave: np.ndarray) -> np.ndarray:
    """(S, 144160) segments of one 16 kHz clip, as the DNSMOS script cuts them."""
    if len(wave) == 0:
        wave = np.zeros(1, dtype=np.float32)
    while len(wave) < SEGMENT:
        wave = np.concatenate([wave, wave])
    count = int(np.floor(len(wave) / SAMPLE_RATE) - 9.01) + 1
    starts = [i * HOP for i in range(count) if i * HOP + SEGMENT <= len(wave)]
    return np.stack([wave[s : s + SEGMENT] for s in starts]).astype(np.float32)


class DnsmosScorer(Scorer):
    """DNSMOS P.835 quality of each candidate (OVRL by default, 1–5); no target needed.

    Options: `total` ("ovrl" | "sig" | "bak"), `max_segments` (segments per onnxruntime call, default 64).
    """

    name: ClassVar[str] = "dnsmos"

    def __init__(self, device: str | torch.device = "cpu", total: str = "ovrl", max_segments: int = 64, **options: Any):
        super().__init__(device=device, **options)
        if total not in ("ovrl", "sig", "bak"):
            raise InputError(f"dnsmos total must be ovrl, sig or bak, got {total!r}")
        self.total = total
        self.path = model_path()
        self.max_segments = max(1, int(max_segments))
        self._session = None

    @property
    def session(self):
        if self._session is None:
            import onnxruntime as ort

            providers = ["CPUExecutionProvider"]
            if self.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, ("CUDAExecutionProvider", {"device_id": self.device.index or 0}))
            self._session = ort.InferenceSession(str(self.path), providers=providers)
        return self._session

    def prepare(self, target: TargetSpeech) -> None:
        return None

    def mos(self, audio: AudioBatch) -> dict[str, torch.Tensor]:
        """{"sig", "bak", "ovrl"}: (B,) mean MOS per clip."""
        audio = resample_batch(AudioBatch(audio.wave.detach().float(), audio.lengths, audio.sample_rate), SAMPLE_RATE)
        wave, lengths = audio.wave, audio.lengths
        host = wave.cpu().numpy()
        per_clip = [segments(np.clip(host[i, : int(n)], -1.0, 1.0)) for i, n in enumerate(lengths.tolist())]
        batch = np.concatenate(per_clip) if per_clip else np.zeros((0, SEGMENT), np.float32)
        raw = np.concatenate([self.session.run(None, {"input_1": batch[i : i + self.max_segments]})[0]
                              for i in range(0, len(batch), self.max_segments)] or [np.zeros((0, 3), np.float32)])
        scores = np.stack([np.polyval(POLY_SIG, raw[:, 0]), np.polyval(POLY_BAK, raw[:, 1]), np.polyval(POLY_OVRL, raw[:, 2])], 1)
        owner = np.repeat(np.arange(len(per_clip)), [len(s) for s in per_clip])
        sums = np.zeros((len(per_clip), 3))
        np.add.at(sums, owner, scores)
        means = torch.from_numpy(sums / np.maximum(1, np.bincount(owner, minlength=len(per_clip)))[:, None]).float()
        return {k: means[:, i].to(self.device) for i, k in enumerate(("sig", "bak", "ovrl"))}

    def score(self, renders: Renders, state: None) -> ScoreResult:
        parts = self.mos(renders.audio(0, sample_rate=SAMPLE_RATE))
        return ScoreResult(total=parts[self.total], parts=parts)
