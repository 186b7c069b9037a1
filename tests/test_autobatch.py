"""`--batch auto`: the choice rule, the real probe on the fake parts, the config it writes, the CLI path."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from tests import fakes  # registers the fake renderer, scorer and strategy
from tests.test_cli import cli, fake_clone
from voicesearch.autobatch import CPU_BATCH, DoesNotFit, PopulationProbe, choose, parse_batch, resolve
from voicesearch.errors import InputError
from voicesearch.loop import Budget, Search
from voicesearch.session import make_config
from voicesearch.space import FullPackSpace


def rates(table: dict[int, float], fits_below: int | None = None):
    """A probe from a table of evals/s; sizes from `fits_below` on do not fit. Records the sizes asked."""
    asked: list[int] = []

    def probe(b: int) -> float:
        asked.append(b)
        if fits_below is not None and b >= fits_below:
            raise DoesNotFit("CUDA out of memory")
        return table[b]

    probe.asked = asked
    return probe


def test_stops_when_the_gain_is_5_percent_or_less_and_keeps_the_smaller():
    probe = rates({8: 10.0, 16: 18.0, 32: 30.0, 64: 31.0, 128: 60.0})
    choice = choose(probe)
    assert choice.batch == 32
    assert probe.asked == [8, 16, 32, 64]  # 64 is only 3 % faster than 32: no further probing
    assert "not more than 5% faster" in choice.reason


def test_a_slower_size_stops_and_the_fastest_wins():
    choice = choose(rates({8: 10.0, 16: 25.0, 32: 20.0}))
    assert choice.batch == 16 and [t.batch for t in choice.trials] == [8, 16, 32]


def test_out_of_memory_stops_at_the_largest_that_fits():
    probe = rates({8: 10.0, 16: 18.0, 32: 30.0, 64: 50.0}, fits_below=64)
    choice = choose(probe)
    assert choice.batch == 32 and probe.asked == [8, 16, 32, 64]
    assert choice.trials[-1].failed == "CUDA out of memory" and "64 does not fit" in choice.reason
    assert "population 32" in choice.line()


def test_keeps_growing_to_the_last_size_while_it_pays():
    choice = choose(rates({8: 1.0, 16: 2.0, 32: 4.0, 64: 8.0, 128: 16.0, 256: 32.0}))
    assert choice.batch == 256


def test_nothing_fits_is_a_clear_error():
    with pytest.raises(InputError, match="even a population of 8"):
        choose(rates({}, fits_below=1))


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("AUTO", "auto"), ("16", 16), (3, 3)])
def test_parse_batch(value, expected):
    assert parse_batch(value) == expected


@pytest.mark.parametrize("value", ["0", "-2", "lots", "1.5"])
def test_parse_batch_rejects(value):
    with pytest.raises(InputError, match="--batch"):
        parse_batch(value)


def fake_config(target_file):
    return make_config(
        target={"paths": [str(target_file)], "texts": []}, strategy={"name": "hill-climb", "options": {}},
        scorer={"name": "fake-spectrum", "options": {}}, space={"name": "offset", "options": {}},
        renderer={"name": "fake", "options": {}}, device="cpu", budget={"steps": 2, "evals": None, "seconds": None},
        batch_size="auto")


@pytest.fixture
def target_file(tmp_path):
    t = np.arange(3 * 8000) / 8000
    path = tmp_path / "target.wav"
    sf.write(path, 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)), 8000)
    path.with_suffix(".txt").write_text("hello world")
    return path


def test_probe_path_builds_the_search_with_the_chosen_population(target_file):
    config = fake_config(target_file)
    probe = rates({8: 5.0, 16: 9.0, 32: 9.2})
    config, parts, choice = resolve(config, probe=probe)
    assert choice.batch == 16 and probe.asked == [8, 16, 32]
    assert config["batch_size"] == 16 and config["batch_auto"]["chosen"] == 16
    assert [t["batch"] for t in config["batch_auto"]["trials"]] == [8, 16, 32]
    assert parts.search.strategy.batch_size == 16
    assert parts.search.strategy.ask().shape[0] == 16
    json.dumps(config)  # it goes into config.json


def test_off_cuda_the_population_is_fixed_without_building(target_file):
    config, parts, choice = resolve(fake_config(target_file))
    assert parts is None and choice.batch == CPU_BATCH == config["batch_size"]
    assert "cpu" in choice.reason


class SplittingRenderer(fakes.FakeRenderer):
    """Counts an out-of-memory split for batches over `limit`, as KokoroRenderer does."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit, self.oom_retries, self.max_batch = limit, 0, 4

    def render(self, packs, text, **kw):
        if packs.shape[0] > min(self.limit, self.max_batch):
            self.oom_retries += 1
        return super().render(packs, text, **kw)


class CountingScorer(fakes.FakeSpectrumScorer):
    """A scorer with running state, like the hybrid's early-exit threshold."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.scored = 0

    def score(self, renders, state):
        self.scored += len(renders)
        return super().score(renders, state)

    def state_dict(self):
        return {"scored": self.scored}

    def load_state_dict(self, state):
        self.scored = state["scored"]


def test_real_probe_measures_restores_state_and_detects_splits():
    renderer = SplittingRenderer(limit=16)
    scorer = CountingScorer()
    stock = renderer.stock_voices()
    strategy = fakes.HillClimb(FullPackSpace(stock), stock, torch.Generator(), batch_size=8)
    probe = PopulationProbe(Search(strategy, scorer, renderer, fakes.fake_target(), Budget(steps=1)))
    assert probe(8) > 0
    assert scorer.scored == 0  # the search starts as if never probed
    assert renderer.max_batch == 4  # put back after the probe raised it to 8
    assert renderer.calls == 3  # a warm-up and two timed repetitions
    with pytest.raises(DoesNotFit, match="split"):
        probe(32)
    choice = choose(probe, sizes=(8, 16, 32, 64))
    assert choice.batch in (8, 16) and choice.trials[-1].batch <= 32


def test_cli_batch_auto_on_cpu_writes_the_number_and_says_so(tmp_path, target_file):
    out = tmp_path / "run"
    res = cli(*fake_clone(target_file, "--out", out, "--steps", "2", "--batch", "auto", "--device", "cpu"))
    assert res.returncode == 0, res.stderr
    assert "--batch auto: population 8" in res.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["batch_size"] == 8 and config["batch_auto"]["chosen"] == 8
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert history[-1]["evals"] == 16  # two steps of 8


def test_cli_bad_batch_is_exit_2(tmp_path, target_file):
    res = cli(*fake_clone(target_file, "--out", tmp_path / "run", "--steps", "2", "--batch", "many"))
    assert res.returncode == 2 and "--batch" in res.stderr and "Traceback" not in res.stderr
