"""An interrupted + resumed run must produce the same history as an uninterrupted one."""
import json

import pytest
import torch

from tests.fakes import FakeRenderer, FakeSpectrumScorer, HillClimb, fake_target
from voicesearch.loop import Budget, Callback, Search
from voicesearch.run import RunRecorder, load_checkpoint, read_history
from voicesearch.space import OffsetSpace


def _search(stock, budget_steps=12):
    space = OffsetSpace(stock)
    strategy = HillClimb(space, stock, torch.Generator().manual_seed(3), batch_size=6)
    return Search(strategy, FakeSpectrumScorer(), FakeRenderer(), fake_target(), Budget(steps=budget_steps))


class InterruptAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step(self, search, x, result, improved):
        if search.progress.step == self.step:
            search._stop_requested = True  # what the Ctrl-C handler does


def _comparable(rows):
    return [{k: v for k, v in r.items() if k not in ("seconds", "time")} for r in rows]


@pytest.mark.parametrize("checkpoint_every, stop_at", [(1, 5), (4, 7)])
def test_resume_reproduces_history(tmp_path, checkpoint_every, stop_at):
    stock = FakeRenderer().stock_voices()
    full = _search(stock)
    full.callbacks.append(RunRecorder(tmp_path / "full", checkpoint_every=checkpoint_every))
    full.run()

    part = _search(stock)
    part.callbacks += [RunRecorder(tmp_path / "part", checkpoint_every=checkpoint_every), InterruptAt(stop_at)]
    with pytest.raises(KeyboardInterrupt):
        part.run()
    assert len(read_history(tmp_path / "part")) == stop_at
    assert not (tmp_path / "part" / "voice_final.pt").exists()

    resumed = _search(stock)  # a fresh process would rebuild everything from config.json
    load_checkpoint(resumed, tmp_path / "part" / "checkpoint.pt")
    assert resumed.progress.step == stop_at
    resumed.callbacks.append(RunRecorder(tmp_path / "part", checkpoint_every=checkpoint_every))
    resumed.run()

    a, b = read_history(tmp_path / "full"), read_history(tmp_path / "part")
    assert len(a) == 12 and _comparable(a) == _comparable(b)
    assert torch.equal(torch.load(tmp_path / "full" / "voice_final.pt"), torch.load(tmp_path / "part" / "voice_final.pt"))


def test_search_improves_and_tracks_best(tmp_path):
    stock = FakeRenderer().stock_voices()
    s = _search(stock, budget_steps=15)
    s.callbacks.append(RunRecorder(tmp_path, checkpoint_every=5))
    progress = s.run()
    rows = read_history(tmp_path)
    assert rows[-1]["best"] == pytest.approx(progress.best_score)
    assert progress.best_score > rows[0]["batch_mean"]
    assert [r["best"] for r in rows] == sorted(r["best"] for r in rows)  # best-so-far never drops
    assert progress.evals == 15 * 6
    assert (tmp_path / "voice_best.npz").exists() and (tmp_path / "samples" / "best_target_text.wav").exists()
    json.dumps(rows[-1])


def test_budget_by_evals_and_time():
    stock = FakeRenderer().stock_voices()
    s = _search(stock)
    s.budget = Budget(evals=20)
    assert s.run().evals == 20  # the last population is cut to what the budget allows
    s = _search(stock)
    s.budget = Budget(seconds=0.0)
    assert s.run().step == 0


def test_evals_budget_never_overshoots_and_a_trimmed_run_resumes(tmp_path):
    """`--evals 20` with populations of 6 runs 20 (not 24); the strategy does not see the cut population, so a
    resume with a larger budget asks that population again and continues (pycma's replay check included)."""
    from strategies.cma_es import CMAES

    stock = FakeRenderer().stock_voices()

    def cma(budget):
        space = OffsetSpace(stock)
        strategy = CMAES(space, stock, torch.Generator().manual_seed(1), batch_size=6, start="mean")
        return Search(strategy, FakeSpectrumScorer(), FakeRenderer(), fake_target(), Budget(evals=budget))

    seen = []

    class Asked(Callback):
        def on_step(self, search, x, result, improved):
            seen.append(x.clone())

    first = cma(20)
    first.callbacks += [RunRecorder(tmp_path, checkpoint_every=100), Asked()]
    assert first.run().evals == 20
    assert [x.shape[0] for x in seen] == [6, 6, 6, 2]
    resumed = cma(32)
    load_checkpoint(resumed, tmp_path / "checkpoint.pt")
    resumed.callbacks.append(Asked())
    assert resumed.run().evals == 32
    assert torch.equal(seen[4][:2], seen[3])  # the cut population, asked again in full


def test_a_history_line_cut_by_a_crash_is_dropped_before_the_run_appends(tmp_path):
    """kill -9 in the middle of writing a row leaves half a line without a newline: resume must not append to it."""
    stock = FakeRenderer().stock_voices()
    full = _search(stock)
    full.callbacks.append(RunRecorder(tmp_path / "full", checkpoint_every=2))
    full.run()
    part = _search(stock)
    part.callbacks += [RunRecorder(tmp_path / "part", checkpoint_every=2), InterruptAt(4)]
    with pytest.raises(KeyboardInterrupt):
        part.run()
    with open(tmp_path / "part" / "history.jsonl", "a") as f:
        f.write('{"step": 5, "evals": 3')  # the crash
    resumed = _search(stock)
    load_checkpoint(resumed, tmp_path / "part" / "checkpoint.pt")
    resumed.callbacks.append(RunRecorder(tmp_path / "part", checkpoint_every=2))
    resumed.run()
    assert _comparable(read_history(tmp_path / "part")) == _comparable(read_history(tmp_path / "full"))
