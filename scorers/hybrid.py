"""KVoiceWalk's hybrid score, batched, with the seed's early exit as staged scoring.

The seed (KVoiceWalk `FitnessScorer.hybrid_similarity` + `KVoiceWalk.score_voice`) scores a voice by
  target similarity   cosine of Resemblyzer embeddings, render of the target transcript vs the target;
  self similarity     cosine between the voice's renders of the transcript and of a second text;
  feature similarity  (100 - Σ relative differences of 106 audio features) / 100, 0.01 when negative;
combined as a weighted harmonic mean  Σw / Σ(w_i / v_i) × 100  with w = (0.48, 0.50, 0.02) in that order.
Early exit: a candidate whose target similarity is not above 0.98 × the target similarity of the best
voice so far is not rendered with the second text and scores 0 (real scores are ~30–100), as in the
seed. The first scored batch has no best yet: threshold 0, as the seed's starting voice; the same after
`reset_reference()`, which the loop calls when a strategy starts a new incumbent (the random walk's start
voice), so the walk exits early against its own best, as the seed's does, not against the best stock voice.
The best voice's score and target similarity live in `state_dict()` so a resumed search keeps them.

Texts: 0 = the target transcript, 1 = `other_text` (the seed's default sentence).
Parts: target_similarity, self_similarity, feature_similarity (0 where skipped), rendered_other (1/0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from voicesearch import registry
from voicesearch.errors import InputError
from voicesearch.renderer import Renders
from voicesearch.scorer import Scorer
from voicesearch.types import ScoreResult, TargetSpeech

from .embedding import EmbeddedTarget, EmbeddingScorer
from .features import SAMPLE_RATE as FEATURE_RATE, FeatureScorer, feature_similarity

OTHER_TEXT = ("If you mix vinegar, baking soda, and a bit of dish soap in a tall cylinder, the resulting eruption is both a "
              "visual and tactile delight, often used in classrooms to simulate volcanic activity on a miniature scale.")
WEIGHTS = (0.48, 0.50, 0.02)  # target, self, feature
STAGE = 0.98


def weighted_harmonic_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σw / Σ(w / v) along the last axis (the seed's formula, without its ×100)."""
    return weights.sum() / (weights / values).sum(-1)


def _parse_weights(weights: Any) -> tuple[float, float, float]:
    if isinstance(weights, str):
        weights = [w for w in weights.replace(";", ",").split(",") if w.strip()]
    try:
        out = tuple(float(w) for w in weights)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or any(w < 0 for w in out) or sum(out) <= 0:
        raise InputError(f"hybrid weights must be three non-negative numbers 'target,self,feature', got {weights!r}")
    return out  # type: ignore[return-value]


@dataclass
class HybridTarget:
    speaker: EmbeddedTarget
    features: torch.Tensor  # (106,) the target's feature vector


class HybridScorer(Scorer):
    """KVoiceWalk's score: harmonic mean of target, self and feature similarity ×100, with its early exit.

    Options: `speaker` (embedding scorer for target/self similarity: resemblyzer | ecapa | wavlm | …),
    `other_text`, `weights` ("0.48,0.5,0.02"), `stage` (0.98; 0 turns the early exit off),
    `features` ("torch" | "librosa").
    """

    name: ClassVar[str] = "hybrid"

    def __init__(self, device: str | torch.device = "cpu", speaker: str = "resemblyzer", other_text: str = OTHER_TEXT,
                 weights: Any = WEIGHTS, stage: float = STAGE, features: str = "torch", **options: Any):
        super().__init__(device=device, **options)
        self.speaker = registry.get("scorers", speaker)(device=device)
        if not isinstance(self.speaker, EmbeddingScorer):
            raise InputError(f"hybrid needs a speaker-embedding scorer for speaker= (resemblyzer, ecapa, wavlm), not {speaker!r}")
        if not str(other_text).strip():
            raise InputError("hybrid other_text is empty: give a sentence or two for the self-similarity render")
        self.other_text = str(other_text).strip()
        self.weights = torch.tensor(_parse_weights(weights))
        self.stage = float(stage)
        self.features = FeatureScorer(device=device, backend=features)
        self.best_score = -math.inf
        self.best_target_similarity: float | None = None

    def texts(self, target: TargetSpeech) -> list[str]:
        return [target.text, self.other_text]

    def prepare(self, target: TargetSpeech) -> HybridTarget:
        if not target.text:
            raise InputError("the hybrid scorer renders the target's transcript: give the words of the target clip (--text)")
        return HybridTarget(self.speaker.prepare(target), self.features.prepare(target))

    def threshold(self) -> float:
        """Target similarity a candidate must exceed to be rendered with the second text."""
        return 0.0 if self.best_target_similarity is None else self.stage * self.best_target_similarity

    def score(self, renders: Renders, state: HybridTarget) -> ScoreResult:
        embedder = self.speaker.embedder
        emb = embedder.embed(renders.audio(0, sample_rate=embedder.sample_rate))
        target_sim = emb @ self.speaker.target_vector(state.speaker).to(emb.device)
        B = target_sim.shape[0]
        go = target_sim > self.threshold() if self.stage > 0 else torch.ones_like(target_sim, dtype=torch.bool)
        zeros = torch.zeros(B, device=target_sim.device)
        self_sim, feat_sim, total = zeros.clone(), zeros.clone(), zeros.clone()
        index = go.nonzero()[:, 0]
        if len(index):
            subset = index.to(renders.packs.device)
            other = embedder.embed(renders.audio(1, sample_rate=embedder.sample_rate, index=subset))
            self_sim[index] = (emb[index] * other.to(emb.device)).sum(-1)
            feats = self.features.extract(renders.audio(0, sample_rate=FEATURE_RATE).select(subset))
            feat_sim[index] = feature_similarity(feats, state.features).float().to(feat_sim.device)
            values = torch.stack([target_sim[index], self_sim[index], feat_sim[index]], -1)
            total[index] = 100.0 * weighted_harmonic_mean(values, self.weights.to(values.device))
        best = int(total.argmax())
        if float(total[best]) > self.best_score:
            self.best_score, self.best_target_similarity = float(total[best]), float(target_sim[best])
        parts = {"target_similarity": target_sim, "self_similarity": self_sim, "feature_similarity": feat_sim,
                 "rendered_other": go.float()}
        return ScoreResult(total=total, parts=parts, embeddings=emb)

    def reset_reference(self) -> None:
        self.best_score, self.best_target_similarity = -math.inf, None

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_target_similarity": self.best_target_similarity,
                "speaker": self.speaker.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score = float(state.get("best_score", -math.inf))
        self.best_target_similarity = state.get("best_target_similarity")
        self.speaker.load_state_dict(state.get("speaker", {}))
