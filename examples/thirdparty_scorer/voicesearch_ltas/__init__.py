"""Long-term average spectrum (LTAS) similarity: a cheap timbre match, batched and differentiable."""
import torch

from voicesearch import Renders, Scorer, ScoreResult, TargetSpeech
from voicesearch.resample import resample

RATE, N_FFT = 16000, 1024


def ltas(wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B, F) log power spectrum averaged over each item's own frames."""
    spec = torch.stft(wave, N_FFT, N_FFT // 4, window=torch.hann_window(N_FFT, device=wave.device), return_complex=True)
    power = spec.abs().pow(2)  # (B, F, frames)
    mask = (torch.arange(power.shape[-1], device=wave.device)[None] < (lengths[:, None] // (N_FFT // 4)))
    mean = (power * mask[:, None]).sum(-1) / mask.sum(-1, keepdim=True).clamp(min=1)
    return torch.log(mean + 1e-8)


class LtasScorer(Scorer):
    """Cosine between mean-removed log LTAS of candidate and target."""

    differentiable = True

    def prepare(self, target: TargetSpeech) -> torch.Tensor:
        clip = resample(target.clips[0], target.sample_rate, RATE).to(self.device)
        ref = ltas(clip[None], torch.tensor([clip.shape[-1]], device=self.device))
        return ref - ref.mean(-1, keepdim=True)

    def score(self, renders: Renders, state: torch.Tensor) -> ScoreResult:
        audio = renders.audio(0, sample_rate=RATE)
        spec = ltas(audio.wave, audio.lengths)
        sim = torch.nn.functional.cosine_similarity(spec - spec.mean(-1, keepdim=True), state, dim=-1)
        return ScoreResult(total=sim, parts={"ltas": sim})
