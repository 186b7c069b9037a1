"""Small value types passed around the search loop."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class AudioBatch:
    """B waveforms, zero-padded to a common length.

    `wave` is (B, T) float32 on any device; `lengths` (B,) holds each item's true length in samples.
    """

    wave: torch.Tensor
    lengths: torch.Tensor
    sample_rate: int
    #: (B, F) the pitch (Hz) the renderer drove its voice source with, at its own frame rate, 0 where unvoiced or
    #: past an item's end; None when the renderer does not report it (Kokoro does; gradients reach it).
    f0: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.wave.shape[0]

    def item(self, i: int) -> torch.Tensor:
        """The i-th waveform trimmed to its own length."""
        return self.wave[i, : int(self.lengths[i])]

    def select(self, index: torch.Tensor) -> "AudioBatch":
        return AudioBatch(self.wave[index], self.lengths[index], self.sample_rate)

    @staticmethod
    def from_list(waves: list[torch.Tensor], sample_rate: int) -> "AudioBatch":
        lengths = torch.tensor([w.shape[-1] for w in waves], dtype=torch.long)
        out = waves[0].new_zeros(len(waves), int(lengths.max()) if len(waves) else 0)
        for i, w in enumerate(waves):
            out[i, : w.shape[-1]] = w
        return AudioBatch(out, lengths.to(out.device), sample_rate)


@dataclass
class ScoreResult:
    """What a scorer says about a batch. Higher `total` is better.

    `parts` holds named per-candidate components (e.g. target/self/feature similarity) for logging and
    composition. `grad` is filled by the loop with d total / d x when the strategy asked for gradients.
    `embeddings` (B, D) lets strategies work on the scorer's embedding (e.g. an l2 loss).
    """

    total: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)
    grad: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None

    def detach(self) -> "ScoreResult":
        return ScoreResult(
            self.total.detach(),
            {k: v.detach() for k, v in self.parts.items()},
            None if self.grad is None else self.grad.detach(),
            None if self.embeddings is None else self.embeddings.detach(),
        )


@dataclass
class TargetSpeech:
    """The speaker to clone: one or more mono clips with their transcripts.

    `clips` are 1-D float32 tensors at `sample_rate`. `transcripts[i]` is the text of clip i (may be
    empty when unknown; scorers that need the words of the target then say so).
    """

    clips: list[torch.Tensor]
    transcripts: list[str]
    sample_rate: int

    @property
    def text(self) -> str:
        """The transcript the search renders by default: the first non-empty one."""
        for t in self.transcripts:
            if t.strip():
                return t.strip()
        return ""
