"""A custom search strategy in user code: shrinking Gaussian hill-climbing.

    voicesearch clone me.wav --plugin examples/custom_strategy.py --strategy shrinking-climb --space offset
"""
import torch

from voicesearch import Strategy, register
from voicesearch.options import opt_number  # CLI text or a number -> a checked number (one-line error)


@register("strategies", "shrinking-climb")
class ShrinkingClimb(Strategy):
    """Sample around the best point; shrink the step when a batch brings nothing better."""

    def __init__(self, *args, step: float = 0.5, shrink: float = 0.8, **kwargs):
        super().__init__(*args, **kwargs)
        self.step, self.shrink = opt_number(step, "step", low=0.0), opt_number(shrink, "shrink", float, 0.0, 1.0)
        self.center = self.space.from_packs(self.stock.packs.mean(0, keepdim=True))[0]
        self.best = -float("inf")

    def ask(self) -> torch.Tensor:
        noise = torch.randn(self.batch_size, self.space.dim, generator=self.rng)
        return self.center + self.step * self.space.scale() * noise

    def tell(self, x, result) -> None:
        i = int(result.total.argmax())
        if float(result.total[i]) > self.best:
            self.best, self.center = float(result.total[i]), x[i].clone()
        else:
            self.step *= self.shrink
