"""A stop asked for before `run()` starts (the app's Stop while models load) ends the run at once; the next run starts clean."""
from __future__ import annotations

import pytest
import torch

from tests.fakes import FakeRenderer, FakeSpectrumScorer, HillClimb, fake_target
from voicesearch.loop import Budget, Search
from voicesearch.space import OffsetSpace


def test_a_stop_requested_before_run_is_kept_and_answered_once():
    renderer = FakeRenderer()
    stock = renderer.stock_voices()
    strategy = HillClimb(OffsetSpace(stock), stock, torch.Generator().manual_seed(3), batch_size=4)
    search = Search(strategy, FakeSpectrumScorer(), renderer, fake_target(), Budget(steps=3))
    search.request_stop()
    with pytest.raises(KeyboardInterrupt):  # how run() reports a stop: the CLI turns it into a resume hint
        search.run()
    assert search.progress.evals == 0 and search.stop_reason == "interrupt"
    assert not search.stop_requested  # answered
    second = search.run()
    assert second.evals == 12 and search.stop_reason is None
