"""Shared base of the speaker-embedding scorers: cosine similarity of candidate and target embeddings.

Two pieces, reusable on their own (the hybrid scorer uses the resemblyzer embedder directly):

- `SpeakerEmbedder`: an `nn.Module` with `sample_rate`, `dim`, and
  `embed(AudioBatch) -> (B, D)` L2-normalised, batched, differentiable w.r.t. the waveform.
  `embed_clips(clips, sample_rate)` is the target path (may run non-differentiable reference
  preprocessing such as a VAD; long clips are cut into windows by the scorer, not here).
- `EmbeddingScorer(Scorer)`: `prepare()` embeds the target clips once; `score()` embeds all B
  candidates in one forward per text and returns the mean cosine to the target (mean of the target
  embeddings, or a random subset of K of them per step with `target_sampling="subset:K"`).

Generalization options (docs/quality.md measures them): `probes=N` renders N built-in sentences of
different lengths besides the transcript (`transcript=false` drops the transcript), so the voice must
match on words and lengths it was not fitted to; `augment=S` scores each render through a random channel
of strength S (`scorers.augment.ChannelAugment`). The RNGs of both are in `state_dict`.

    class MyScorer(EmbeddingScorer):
        name = "my"
        def build_embedder(self) -> SpeakerEmbedder:
            return MyEmbedder().to(self.device)
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from voicesearch.errors import InputError
from voicesearch.options import opt_bool
from voicesearch.renderer import Renders
from voicesearch.resample import resample_batch
from voicesearch.scorer import Scorer
from voicesearch.types import AudioBatch, ScoreResult, TargetSpeech

from .augment import ChannelAugment

#: Sentences the target never said, of different lengths (Kokoro takes a different row of the pack for each
#: length). `probes=N` renders the first N besides the transcript.
PROBE_TEXTS = (
    "She asked me whether the train would arrive before noon.",
    "Good evening, everyone.",
    "In the summer we often walked along the river, talking about books, music and the people we had met.",
    "Could you please call me back tomorrow morning?",
    "The old lighthouse keeper climbed the stairs slowly, counting each step as he went.",
    "Yes, of course.",
)


class SpeakerEmbedder(nn.Module, ABC):
    """Waveforms -> L2-normalised speaker embeddings. Subclasses implement `forward_embed`."""

    sample_rate: ClassVar[int] = 16000
    dim: ClassVar[int] = 0
    #: Target clips longer than this are cut into windows of this length (None: embed whole clips).
    target_window_s: ClassVar[float | None] = None
    #: Kaiser-sinc resampler settings (`voicesearch.resample`) used to reach `sample_rate`.
    resample_width: ClassVar[int] = 16
    resample_rolloff: ClassVar[float] = 0.945

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def to_rate(self, audio: AudioBatch) -> AudioBatch:
        """`audio` on this embedder's device and sample rate (differentiable resampling)."""
        audio = AudioBatch(audio.wave.to(self.device, torch.float32), audio.lengths.to(self.device), audio.sample_rate)
        return resample_batch(audio, self.sample_rate, self.resample_width, self.resample_rolloff)

    def embed(self, audio: AudioBatch) -> torch.Tensor:
        """(B, D) unit vectors. Runs without autograd unless the waveform requires grad."""
        if len(audio) == 0:
            return torch.zeros(0, self.dim, device=self.device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and audio.wave.requires_grad):
            return self.forward_embed(self.to_rate(audio))

    @abstractmethod
    def forward_embed(self, audio: AudioBatch) -> torch.Tensor:
        """(B, D) unit vectors from a batch already at `sample_rate` on `device`."""

    def embed_clips(self, clips: list[torch.Tensor], sample_rate: int) -> torch.Tensor:
        """(N, D) embeddings of target clips (1-D tensors). Override to add reference preprocessing."""
        with torch.no_grad():
            return self.embed(AudioBatch.from_list([c.float() for c in clips], sample_rate))


@dataclass
class EmbeddedTarget:
    """What `EmbeddingScorer.prepare` returns: one embedding per target window, and their mean."""

    embeddings: torch.Tensor  # (N, D) unit vectors
    mean: torch.Tensor  # (D,) unit vector


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def cut_windows(clip: torch.Tensor, sample_rate: int, window_s: float | None) -> list[torch.Tensor]:
    """Split a 1-D clip into near-equal windows of at most `window_s` seconds (no split when None)."""
    if window_s is None or clip.shape[-1] <= window_s * sample_rate:
        return [clip]
    n = math.ceil(clip.shape[-1] / (window_s * sample_rate))
    return list(torch.tensor_split(clip, n))


def parse_target_sampling(value: str) -> int | None:
    """"mean" -> None; "subset:K" -> K. Raises InputError otherwise."""
    if value == "mean":
        return None
    if value.startswith("subset:") and value[7:].isdigit() and int(value[7:]) > 0:
        return int(value[7:])
    raise InputError(f"target_sampling must be 'mean' or 'subset:K' with K >= 1, got {value!r}")


class EmbeddingScorer(Scorer):
    """Cosine similarity between each candidate's embedding and the target speaker's.

    Options: `device`, `target_sampling` ("mean" | "subset:K"), `seed` (for subset sampling),
    `target_window_s` (override the embedder's window for long target clips; 0 = whole clips).
    Result: `total` = `parts["similarity"]` (B,), `embeddings` (B, D).
    """

    differentiable: ClassVar[bool] = True

    def __init__(
        self,
        device: str | torch.device = "cpu",
        target_sampling: str = "mean",
        seed: int = 0,
        target_window_s: float | None = None,
        probes: Any = 0,
        transcript: Any = True,
        augment: Any = 0.0,
        **options: Any,
    ):
        super().__init__(device=device, **options)
        self.probes = _count(probes, "probes", len(PROBE_TEXTS))
        self.transcript = opt_bool(transcript, "transcript")
        if not self.transcript and self.probes == 0:
            raise InputError("transcript=false needs probes >= 1: the scorer must render some text")
        self.augment = ChannelAugment(_strength(augment))
        self.target_sampling = str(target_sampling)
        self.subset_k = parse_target_sampling(self.target_sampling)
        self.rng = torch.Generator().manual_seed(int(seed))
        if target_window_s is not None and float(target_window_s) < 0:
            raise InputError(f"target_window_s must be >= 0 seconds (0 = whole clips), got {target_window_s}")
        self._target_window_s = None if target_window_s is None else float(target_window_s)
        self._embedder: SpeakerEmbedder | None = None

    def texts(self, target: TargetSpeech) -> list[str]:
        return ([target.text] if self.transcript else []) + list(PROBE_TEXTS[: self.probes])

    @abstractmethod
    def build_embedder(self) -> SpeakerEmbedder:
        """Load the model on `self.device` (called once, lazily)."""

    @property
    def embedder(self) -> SpeakerEmbedder:
        if self._embedder is None:
            self._embedder = self.build_embedder().to(self.device).eval()
            self._embedder.requires_grad_(False)
        return self._embedder

    def embed_target(self, target: TargetSpeech) -> torch.Tensor:
        """(N, D): one embedding per target window."""
        if not target.clips:
            raise InputError("the target has no audio clips: give at least one clip of the speaker")
        window = self._target_window_s if self._target_window_s is not None else self.embedder.target_window_s
        windows = [w for clip in target.clips for w in cut_windows(clip, target.sample_rate, window or None)]
        too_short = min(w.shape[-1] for w in windows) < 0.1 * target.sample_rate
        if too_short:
            raise InputError("a target clip is shorter than 0.1 s: give clips of at least a second of speech")
        return self.embedder.embed_clips(windows, target.sample_rate)

    def prepare(self, target: TargetSpeech) -> EmbeddedTarget:
        emb = self.embed_target(target)
        return EmbeddedTarget(emb, _unit(emb.mean(0)))

    def target_vector(self, state: EmbeddedTarget) -> torch.Tensor:
        """(D,) the target direction for this step: the mean, or the mean of a random subset."""
        n = state.embeddings.shape[0]
        if self.subset_k is None or self.subset_k >= n:
            return state.mean
        index = torch.randperm(n, generator=self.rng)[: self.subset_k]
        return _unit(state.embeddings[index.to(state.embeddings.device)].mean(0))

    def similarity(self, audio: AudioBatch, state: EmbeddedTarget) -> ScoreResult:
        emb = self.embedder.embed(self.augment(audio, self.rng) if self.augment.strength > 0 else audio)
        sim = emb @ self.target_vector(state).to(emb.device)
        return ScoreResult(total=sim, parts={"similarity": sim}, embeddings=emb)

    def score(self, renders: Renders, state: EmbeddedTarget) -> ScoreResult:
        # Native-rate audio: the embedder resamples with the filter its reference pipeline needs.
        per_text = [self.similarity(renders.audio(i), state) for i in range(len(renders.texts))]
        if len(per_text) == 1:
            return per_text[0]
        sims = torch.stack([r.total for r in per_text])
        parts = {f"similarity/{i}": s for i, s in enumerate(sims)}
        embeddings = _unit(torch.stack([r.embeddings for r in per_text]).mean(0))
        return ScoreResult(total=sims.mean(0), parts={"similarity": sims.mean(0), **parts}, embeddings=embeddings)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "rng" in state:
            self.rng.set_state(state["rng"])


def _count(value: Any, name: str, most: int) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise InputError(f"option {name}={value!r} is not a whole number") from None
    if not 0 <= n <= most:
        raise InputError(f"option {name}={value!r} is out of range; use 0 to {most}")
    return n


def _strength(value: Any) -> float:
    try:
        s = float(value)
    except (TypeError, ValueError):
        raise InputError(f"option augment={value!r} is not a number; use 0 (off) to 1 (the default range)") from None
    if not 0.0 <= s <= 2.0 or s != s:
        raise InputError(f"option augment={value!r} is out of range; use 0 (off) to 2")
    return s
