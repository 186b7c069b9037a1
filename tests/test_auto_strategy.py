"""`--strategy auto` / `--space auto`: the measured choice, written into config.json so resume rebuilds it."""
import json
from types import SimpleNamespace

import pytest
import torch

from tests.test_cli import FAKES, cli
from voicesearch.session import make_config, resolve_auto


def choose(strategy="auto", space="auto", device="cpu", differentiable=True):
    config = make_config(strategy={"name": strategy, "options": {}}, space={"name": space, "options": {}})
    renderer = SimpleNamespace(device=torch.device(device))  # a device string only: no CUDA needed to test the rule
    config = resolve_auto(config, SimpleNamespace(differentiable=differentiable), renderer)
    return config["strategy"]["name"], config["space"]["name"]


def test_defaults_are_auto():
    config = make_config()
    assert config["strategy"]["name"] == "auto" and config["space"]["name"] == "auto"


@pytest.mark.parametrize("device, differentiable, expected", [
    ("cuda", True, ("gradient", "pca")),     # true gradients: best held-out results in benchmarks/recovery.py
    ("cuda", False, ("cma-es", "pca")),      # e.g. the hybrid scorer: no gradients
    ("cpu", True, ("cma-es", "pca")),        # backward through Kokoro on a CPU is too slow to be the default
])
def test_auto_picks_by_device_and_scorer(device, differentiable, expected):
    assert choose(device=device, differentiable=differentiable) == expected


@pytest.mark.parametrize("strategy, space, expected", [
    ("random-walk", "auto", "full"),         # KVoiceWalk walks the full pack
    ("interpolate", "auto", "full"),
    ("fd-adam", "auto", "pca"),              # the seed's PCA coordinates
    ("nevergrad:NGOpt", "auto", "pca"),      # a variant name resolves through its base class
    ("cma-es", "mixture", "mixture"),        # an explicit space is kept
    ("chain:interpolate>random-walk", "auto", "full"),     # KVoiceWalk's --interpolate_start
    ("chain:interpolate>cma-es>gradient", "auto", "pca"),  # any stage that prefers pca
])
def test_space_auto_is_the_strategys_own(strategy, space, expected):
    assert choose(strategy=strategy, space=space, device="cuda") == (strategy, expected)


def test_chain_stages_given_as_an_option_decide_too():
    config = make_config(strategy={"name": "chain", "options": {"stages": "interpolate>nevergrad:NGOpt"}})
    config = resolve_auto(config, SimpleNamespace(differentiable=True), SimpleNamespace(device=torch.device("cuda")))
    assert config["space"]["name"] == "pca"


def test_clone_records_the_resolved_choice_and_resumes_it(tmp_path):
    import numpy as np
    import soundfile as sf

    clip = tmp_path / "me.wav"
    t = np.arange(2 * 8000) / 8000
    sf.write(clip, 0.3 * np.sin(2 * np.pi * 150 * t), 8000)
    out = tmp_path / "run"
    res = cli("clone", clip, "--text", "hello world", "--plugin", FAKES, "--renderer", "fake", "--scorer", "fake-spectrum",
              "--device", "cpu", "--out", out, "--steps", "2", "--batch", "4")
    assert res.returncode == 0, res.stderr
    config = json.loads((out / "config.json").read_text())
    assert (config["strategy"]["name"], config["space"]["name"]) == ("cma-es", "pca")
    res = cli("resume", out, "--steps", "3", "--plugin", FAKES)  # resume runs plug-in code only when named
    assert res.returncode == 0, res.stderr
    assert len((out / "history.jsonl").read_text().splitlines()) == 3
