"""RunConfig: config.json round-trips byte for byte, nothing is changed in place, resolve() is pure, build() builds;
options a plug-in does not take are refused by an explicit check, not by reading a TypeError's text."""
from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from tests import fakes  # noqa: F401 - registers the fake renderer, scorer and strategy
from voicesearch.config import Named, RunConfig
from voicesearch.errors import InputError
from voicesearch.registry import register
from voicesearch.session import build, make_config
from voicesearch.strategy import Strategy


def _json(config: dict) -> str:
    return json.dumps(config, indent=2, default=str) + "\n"  # as run.write_json writes config.json


@pytest.mark.parametrize("config", [
    make_config(target={"paths": ["/a/me.wav"], "texts": ["hi"]}),
    make_config(target={"paths": [], "demo": {"voices": ["af_bella"], "weights": [1.0], "text": "hi"}}, batch_size=8,
                batch_auto={"chosen": 8, "reason": "fixed on cpu", "trials": []}, score_seconds=5.0, stock_langs=["a", "b"],
                report_live_audio=False, strategy={"name": "cma-es", "options": {"sigma0": 0.3, "stop": False}}),
    # hand-written: keys missing, sections in another order, an extra key inside a section, an int where a float is usual
    {"budget": {"steps": 3}, "target": {"paths": ["x.wav"]}, "batch_size": 4, "speed": 1,
     "strategy": {"name": "cma-es"}, "scorer": {"options": {"a": 1}, "name": "s", "note": "mine"},
     "space": {"name": "auto", "options": {}}, "renderer": {"name": "kokoro", "options": {}}},
])
def test_config_json_round_trips_byte_for_byte(config):
    assert _json(RunConfig.from_dict(config).to_dict()) == _json(config)


def test_frozen_and_sharing_nothing_with_the_dicts():
    source = make_config(target={"paths": ["/a/me.wav"]}, strategy={"name": "cma-es", "options": {"sigma0": 0.3}})
    config = RunConfig.from_dict(source)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 3
    with pytest.raises(TypeError):
        config.strategy.options["sigma0"] = 9  # a read-only view
    source["strategy"]["options"]["sigma0"] = 9
    out = config.to_dict()
    out["target"]["paths"].append("/b.wav")
    assert config.strategy.options["sigma0"] == 0.3 and list(config.target["paths"]) == ["/a/me.wav"]
    assert config.to_dict()["target"]["paths"] == ["/a/me.wav"]
    assert config.exclude_voices == () and config.sample_texts == tuple(source["sample_texts"])


@pytest.mark.parametrize("device, differentiable, expected", [
    ("cuda", True, ("gradient", "pca")), ("cuda", False, ("cma-es", "pca")), ("cpu", True, ("cma-es", "pca"))])
def test_resolve_is_pure(device, differentiable, expected):
    config = RunConfig.from_dict(make_config(target={"paths": ["/a/me.wav"]}))
    before = config.to_dict()
    resolved = config.resolve(SimpleNamespace(differentiable=differentiable), SimpleNamespace(device=torch.device(device)))
    assert (resolved.strategy.name, resolved.space.name) == expected
    assert config.to_dict() == before and (config.strategy.name, config.space.name) == ("auto", "auto")
    assert resolved.resolve(None, None) == resolved  # nothing left to choose
    explicit = dataclasses.replace(config, strategy=Named("random-walk"), space=Named("mixture"))
    assert explicit.resolve(None, SimpleNamespace(device=torch.device("cuda"))) == explicit


@pytest.fixture
def target_file(tmp_path):
    t = np.arange(2 * 8000) / 8000
    path = tmp_path / "me.wav"
    sf.write(path, 0.3 * np.sin(2 * np.pi * 150 * t), 8000)
    path.with_suffix(".txt").write_text("hello world")
    return path


def _fake(target_file, **overrides):
    return make_config(target={"paths": [str(target_file)]}, scorer={"name": "fake-spectrum", "options": {}},
                       renderer={"name": "fake", "options": {}}, device="cpu", batch_size=4,
                       budget={"steps": 2, "evals": None, "seconds": None}, **overrides)


def test_build_leaves_its_config_alone_and_says_what_it_built(target_file):
    source = _fake(target_file)
    before = _json(source)
    parts = RunConfig.from_dict(source).build()
    assert _json(source) == before
    assert (parts.config["strategy"]["name"], parts.config["space"]["name"]) == ("cma-es", "pca")
    assert type(parts.search.strategy).__name__ == "CMAES" and parts.search.strategy.batch_size == 4
    assert parts.search.run().step == 2


class Recording(Strategy):
    """Takes one option, `step`, by name: an unknown one must be refused before this constructor runs."""

    built = 0

    def __init__(self, space, stock, rng, batch_size=16, step: float = 0.1):
        type(self).built += 1
        super().__init__(space, stock, rng, batch_size)

    def ask(self):
        return torch.zeros(self.batch_size, self.space.dim)

    def tell(self, x, result):
        pass


class Buggy(Strategy):
    """A plug-in whose own bug raises a TypeError that mentions an unexpected keyword: not the user's option."""

    def __init__(self, *args, **options):
        super().__init__(*args, **options)
        raise TypeError("helper() got an unexpected keyword argument 'oops'")

    def ask(self): ...

    def tell(self, x, result): ...


def test_unknown_options_are_refused_by_an_explicit_check(target_file):
    register("strategies", "test-recording")(Recording)
    register("strategies", "test-buggy")(Buggy)
    with pytest.raises(InputError, match=r"strategy 'test-recording': unknown option stepp; check --strategy-opt"):
        build(_fake(target_file, strategy={"name": "test-recording", "options": {"stepp": 1}}, space={"name": "offset", "options": {}}))
    assert Recording.built == 0
    build(_fake(target_file, strategy={"name": "test-recording", "options": {"step": 1}}, space={"name": "offset", "options": {}}))
    assert Recording.built == 1
    # a constructor taking **options: the base class refuses what reaches it (UnknownOptions), named in one line
    with pytest.raises(InputError, match=r"strategy 'hill-climb': HillClimb got unknown options: stepp; check --strategy-opt"):
        build(_fake(target_file, strategy={"name": "hill-climb", "options": {"stepp": 1}}, space={"name": "offset", "options": {}}))
    with pytest.raises(InputError, match=r"space 'pca': PCASpace got unknown options: kk"):
        build(_fake(target_file, strategy={"name": "cma-es", "options": {}}, space={"name": "pca", "options": {"kk": 3}}))
    with pytest.raises(TypeError, match="helper"):  # a plug-in's own TypeError stays a bug, whatever its text says
        build(_fake(target_file, strategy={"name": "test-buggy", "options": {}}, space={"name": "offset", "options": {}}))
