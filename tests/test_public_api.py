"""A plug-in written only against the public API (voicesearch, voicesearch.options, voicesearch.rng): it registers,
parses its options, runs a real search with the fake renderer, and its optional hooks drive a chain."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from tests.fakes import FakeRenderer, fake_target
from voicesearch import Budget, InputError, OffsetSpace, Renders, Scorer, ScoreResult, Strategy, register, search
from voicesearch.options import opt_bool, opt_choice, opt_list, opt_number
from voicesearch.registry import get
from voicesearch.rng import np_state_from_plain, np_state_to_plain, numpy_global_rng, numpy_state_from


@register("strategies", "public-api-climb")
class PublicClimb(Strategy):
    """Hill climbing whose Gaussian steps come from numpy (a private stream), stopping after `patience` idle steps."""

    def __init__(self, *args: Any, step: Any = 0.5, shrink: Any = 0.7, patience: Any = 3,
                 start: Any = "mean", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.step = opt_number(step, "step", float, low=0.0)
        self.shrink = opt_number(shrink, "shrink", float, 0.0, 1.0)
        self.patience = opt_number(patience, "patience", int, 1)
        self.start = opt_choice(start, "start", ("mean", "origin"))
        self.center = (self.space.from_packs(self.stock.packs.mean(0, keepdim=True))[0] if self.start == "mean"
                       else torch.zeros(self.space.dim))
        self.best, self.idle, self.warm = -float("inf"), 0, False
        self.np_rng = np_state_to_plain(numpy_state_from(self.rng))  # plain data: saved with the state

    def ask(self) -> torch.Tensor:
        stream = {"np": np_state_from_plain(self.np_rng)}
        with numpy_global_rng(stream):
            noise = torch.from_numpy(np.random.standard_normal((self.batch_size, self.space.dim))).float()
        self.np_rng = np_state_to_plain(stream["np"])
        return self.center + self.step * noise * self.space.scale()

    def tell(self, x: torch.Tensor, result: ScoreResult) -> None:
        i = int(result.total.argmax())
        if float(result.total[i]) > self.best:
            self.best, self.center, self.idle = float(result.total[i]), x[i].clone(), 0
        else:
            self.step, self.idle = self.step * self.shrink, self.idle + 1

    def stop(self) -> str | None:
        return f"no better point in {self.idle} steps" if self.idle >= self.patience else None

    def warm_start(self, points: torch.Tensor, scores: torch.Tensor) -> bool:
        self.center, self.best, self.warm = points[0].clone(), float(scores[0]), True
        return True

    def handoff(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.center[None].clone(), torch.tensor([self.best])


@register("scorers", "public-api-spectrum")
class PublicSpectrum(Scorer):
    """Cosine between the target's and each candidate's magnitude spectrum, optionally band-limited."""

    def __init__(self, device: str = "cpu", bins: Any = 500, loudness: Any = False, **options: Any):
        super().__init__(device, **options)
        self.bins = opt_number(bins, "bins", int, 8)
        self.loudness = opt_bool(loudness, "loudness")

    def spectrum(self, wave: torch.Tensor) -> torch.Tensor:
        spec = torch.fft.rfft(wave[..., :4000], n=4000).abs()[..., : self.bins]
        return spec / spec.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def prepare(self, target: Any) -> torch.Tensor:
        return self.spectrum(target.clips[0][None])

    def score(self, renders: Any, state: torch.Tensor) -> ScoreResult:
        audio = renders.audio(0)
        sim = (self.spectrum(audio.wave) * state).sum(-1)
        parts = {"similarity": sim}
        if self.loudness:
            parts["loudness"] = audio.wave.abs().mean(-1)
        return ScoreResult(total=sim, parts=parts)


def parts(strategy: str = "public-api-climb", batch: int = 8, **options: Any):
    renderer = FakeRenderer()
    stock = renderer.stock_voices()
    space = OffsetSpace(stock)
    rng = torch.Generator().manual_seed(0)
    return renderer, stock, get("strategies", strategy)(space=space, stock=stock, rng=rng, batch_size=batch, **options)


def test_a_public_api_plugin_improves_on_every_stock_voice_and_stops_with_a_reason():
    renderer, stock, strategy = parts(step="0.5", patience="4")
    scorer = get("scorers", "public-api-spectrum")(bins="400", loudness="yes")
    target = fake_target()
    progress = search(strategy, scorer, renderer, target, Budget(evals=400))
    space = strategy.space
    with torch.no_grad():  # the best stock voice, scored the same way
        stock_scores = scorer.score(Renders(renderer, space.to_packs(space.from_packs(stock.packs)), [target.text]),
                                    scorer.prepare(target)).total
    assert progress.best_score > float(stock_scores.max()) + 0.01
    assert set(progress.best_parts) == {"similarity", "loudness"}
    reason = strategy.stop()
    assert progress.evals < 400 and strategy.done() and reason and reason.startswith("no better point")


def test_options_helpers_refuse_bad_values_in_one_line():
    for options, words in [({"step": "fast"}, "step='fast' is not a number"), ({"patience": "2.5"}, "not an integer"),
                           ({"shrink": "3"}, "out of range"), ({"start": "best"}, "not one of: mean, origin")]:
        with pytest.raises(InputError, match=words):
            parts(**options)
    with pytest.raises(InputError, match="not a boolean"):
        get("scorers", "public-api-spectrum")(loudness="maybe")
    assert opt_list("a, b,,c") == ["a", "b", "c"] and opt_list(("x", 2)) == ["x", "2"]


def test_the_public_hooks_drive_a_chain_and_the_state_is_plain():
    renderer, stock, chain = parts("chain", stages="public-api-climb>public-api-climb")
    target = fake_target()
    search(chain, get("scorers", "public-api-spectrum")(), renderer, target, Budget(evals=400))
    first, second = chain.stages
    assert chain.index == 1 and second.warm and first.done()
    assert second.best >= first.best  # the second stage started from the first one's hand-off
    state = first.state_dict()
    assert isinstance(state["np_rng"]["keys"], torch.Tensor)
    fresh = parts()[2]
    fresh.load_state_dict(state)  # plain data: loads into a fresh instance, numpy stream included
    assert torch.equal(fresh.ask(), first.ask())
