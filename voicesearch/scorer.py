"""Scorer: how close a batch of rendered candidates is to the target. Higher is better.

    class MyScorer(Scorer):
        def prepare(self, target):                 # once per search
            return embed(target.clips)
        def score(self, renders, state):           # once per batch
            audio = renders.audio(0, sample_rate=16000)   # the target text, all B candidates
            return ScoreResult(total=cosine(embed(audio), state))
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from .errors import UnknownOptions
from .renderer import Renders
from .types import ScoreResult, TargetSpeech


class Scorer(ABC):
    """Base class of all scorers.

    - `texts(target)`: the texts each candidate is rendered with; `renders.audio(i)` is text i.
      Default: the target's transcript.
    - `prepare(target)`: embed the target once; whatever it returns is passed back to `score`.
    - `score(renders, state)`: one batched forward for all candidates; returns `ScoreResult`.
    - `differentiable = True` when `total` carries gradients back to the audio.
    - `text_independent = True` when the score does not depend on which words the candidates speak (a speaker
      embedding): the loop may then render a shorter text than the transcript (`score_seconds`, the CPU default).
    """

    name: ClassVar[str] = ""
    differentiable: ClassVar[bool] = False
    text_independent: ClassVar[bool] = False

    def __init__(self, device: str | torch.device = "cpu", **options: Any):
        self.device = torch.device(device)
        if options:
            raise UnknownOptions(f"{type(self).__name__} got unknown options: {', '.join(sorted(options))}")

    def texts(self, target: TargetSpeech) -> list[str]:
        return [target.text]

    @abstractmethod
    def prepare(self, target: TargetSpeech) -> Any: ...

    @abstractmethod
    def score(self, renders: Renders, state: Any) -> ScoreResult: ...

    def reset_reference(self) -> None:
        """Forget running references (e.g. a staged early-exit threshold): the strategy starts a new incumbent."""

    def state_dict(self) -> dict[str, Any]:
        """RNG or running state that must survive a resume (e.g. per-step target sampling)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
