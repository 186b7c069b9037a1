"""What a run directory promises (docs/run-directory.md): one writer at a time, and loading one runs no code.

A crafted checkpoint (a pickle payload; optimizer state in the old pickled form; state entries that would
replace methods) and a crafted config.json (plug-ins to import) must be refused without running anything:
each payload would create a marker file, which must never appear.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.fakes import FakeRenderer, FakeSpectrumScorer, fake_target
from tests.warm_cli import WarmCli
from voicesearch.errors import InputError
from voicesearch.loop import Budget, Search
from voicesearch.run import CHECKPOINT, RunLock, load_checkpoint, read_history, save_checkpoint
from voicesearch.space import OffsetSpace

REPO = Path(__file__).resolve().parents[1]
PLUGINS = ["--plugin", REPO / "tests" / "fakes.py", "--plugin", REPO / "tests" / "faults.py"]
RUN = [*PLUGINS, "--renderer", "faulty-fake", "--scorer", "fake-spectrum", "--space", "offset", "--strategy", "cma-es",
       "--batch", "4", "--checkpoint-every", "2", "--seed", "5"]


@pytest.fixture(scope="module")
def warm():
    with WarmCli() as cli:
        yield cli


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    d = tmp_path_factory.mktemp("target")
    t = np.arange(3 * 22050) / 22050
    sf.write(d / "me.wav", 0.3 * np.sin(2 * np.pi * 140 * t), 22050)
    (d / "me.txt").write_text("hello world, this is me")
    return d / "me.wav"


@pytest.fixture(scope="module")
def finished(tmp_path_factory, warm, target):
    run = tmp_path_factory.mktemp("finished") / "run"
    rc, _, err = warm.run(["clone", target, *RUN, "--steps", "4", "--out", run])
    assert rc == 0, err
    return run


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _steps(run: Path) -> list[int]:
    return [r["step"] for r in read_history(run)]


# ------------------------------------------------------------------ the lock


def test_a_locked_run_directory_is_refused_in_one_line_and_left_alone(tmp_path, warm, target):
    out = tmp_path / "run"
    out.mkdir()
    lock = RunLock(out).acquire()  # another process is writing it (this one)
    try:
        rc, _, err = warm.run(["clone", target, *RUN, "--steps", "2", "--out", out])
        assert rc == 2 and "in use by another voicesearch process" in _one_line(err) and f"pid {os.getpid()}" in err
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    finally:
        lock.release()
    assert list(out.iterdir()) == []  # a run directory at rest holds no lock file
    rc, _, err = warm.run(["clone", target, *RUN, "--steps", "2", "--out", out])
    assert rc == 0, err


def test_two_resumes_at_once_the_second_refuses_and_history_stays_whole(tmp_path, warm, finished):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    mark = tmp_path / "render-"
    first = warm.start(["resume", run, "--steps", "8", *PLUGINS], env={"FAULT_RENDER_DELAY": "0.2", "FAULT_MARK": str(mark)})
    deadline = time.monotonic() + 120
    while not Path(f"{mark}1").exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    rc, _, err = warm.run(["resume", run, "--steps", "12", *PLUGINS])
    assert rc == 2 and "in use by another voicesearch process" in _one_line(err)
    rc, _, err = warm.wait(first)
    assert rc == 0, err
    assert _steps(run) == list(range(1, 9))
    assert json.loads((run / "config.json").read_text())["budget"]["steps"] == 8  # the refused resume wrote nothing


def test_two_clones_into_one_directory_at_once_one_runs_one_refuses(tmp_path, warm, target):
    for attempt in range(3):
        out = tmp_path / f"run{attempt}"
        children = [warm.start(["clone", target, *RUN, "--steps", "4", "--out", out], env={"FAULT_RENDER_DELAY": "0.1"})
                    for _ in range(2)]
        results = [warm.wait(child) for child in children]
        codes = sorted(rc for rc, _, _ in results)
        assert codes == [0, 2], results
        refusal = next(err for rc, _, err in results if rc == 2)
        assert any(p in _one_line(refusal) for p in ("in use by another voicesearch process", "already exists")), refusal
        assert _steps(out) == [1, 2, 3, 4]
        assert (out / "voice_final.pt").is_file() and not (out / ".lock").exists()


def test_a_killed_writer_leaves_no_stale_lock(tmp_path, warm, finished):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    mark = tmp_path / "render-"
    child = warm.start(["resume", run, "--steps", "8", *PLUGINS], env={"FAULT_RENDER_DELAY": "0.3", "FAULT_MARK": str(mark)})
    deadline = time.monotonic() + 120
    while not Path(f"{mark}1").exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    assert warm.wait(child)[0] == -signal.SIGKILL
    assert (run / ".lock").exists()  # left behind by kill -9, but not locked: the kernel dropped the flock
    rc, _, err = warm.run(["resume", run, "--steps", "6", *PLUGINS])
    assert rc == 0, err
    assert _steps(run) == list(range(1, 7)) and not (run / ".lock").exists()


# ------------------------------------------------------------------ no code from a run directory


MARKER = "voicesearch_pwned_marker"


class Payload:
    """Unpickling this runs a shell command that creates MARKER in the working directory."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def _cma_search(seed: int = 0):
    from strategies.cma_es import CMAES

    renderer = FakeRenderer()
    stock = renderer.stock_voices()
    strategy = CMAES(OffsetSpace(stock), stock, torch.Generator().manual_seed(seed), batch_size=4)
    return Search(strategy, FakeSpectrumScorer(), renderer, fake_target(), Budget(steps=4))


def _nevergrad_search(seed: int = 0):
    pytest.importorskip("nevergrad")
    from strategies.nevergrad_adapter import NevergradStrategy

    renderer = FakeRenderer()
    stock = renderer.stock_voices()
    strategy = NevergradStrategy(OffsetSpace(stock), stock, torch.Generator().manual_seed(seed), batch_size=4,
                                 variant="TwoPointsDE", budget=40)
    return Search(strategy, FakeSpectrumScorer(), renderer, fake_target(), Budget(steps=4))


def _tamper(path: Path, edit) -> None:
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


def _pickle_tensor(obj) -> torch.Tensor:
    return torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8)


@pytest.mark.parametrize("make, key", [(_cma_search, "es"), (_nevergrad_search, "optimizer_pickle")])
def test_optimizer_state_is_plain_data_and_an_old_pickled_one_is_refused_unopened(tmp_path, monkeypatch, make, key):
    monkeypatch.chdir(tmp_path)
    search = make()
    search.run()
    save_checkpoint(search, tmp_path / CHECKPOINT)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)

    def plain(value) -> bool:  # tensors of numbers, numbers, strings and containers of them: nothing else
        if isinstance(value, torch.Tensor):
            return value.dtype != torch.uint8 or value.numel() < 64  # no byte blobs (a pickle would be one)
        if isinstance(value, dict):
            return all(isinstance(k, str) and (k == "rng" or plain(v)) for k, v in value.items())  # rng: a torch
            # Generator's state bytes, handed to Generator.set_state, never unpickled
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (bool, int, float, str))

    assert plain(state["strategy"]), "optimizer state must be plain data"
    _tamper(tmp_path / CHECKPOINT, lambda s: s["strategy"].__setitem__(key, _pickle_tensor(Payload())))
    with pytest.raises(InputError, match="pickle"):
        load_checkpoint(make(seed=1), tmp_path / CHECKPOINT)
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize("entry, value", [("ask", torch.zeros(3)), ("space", "elsewhere"), ("sigma0", torch.zeros(2)),
                                          ("__class__", 1)])
def test_state_entries_that_would_replace_methods_or_parts_are_refused(tmp_path, entry, value):
    search = _cma_search()
    search.run()
    save_checkpoint(search, tmp_path / CHECKPOINT)
    _tamper(tmp_path / CHECKPOINT, lambda s: s["strategy"].__setitem__(entry, value))
    fresh = _cma_search()
    with pytest.raises(InputError):
        load_checkpoint(fresh, tmp_path / CHECKPOINT)
    assert callable(fresh.strategy.ask) and not isinstance(fresh.strategy.space, str)


def test_a_crafted_checkpoint_runs_no_code_on_resume(tmp_path, warm, finished):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    torch.save({"progress": {"step": 1}, "strategy": Payload(), "scorer": {}, "space": {}, "rng": {}}, run / CHECKPOINT)
    before = (run / CHECKPOINT).read_bytes()
    rc, _, err = warm.run(["resume", run, "--steps", "8", *PLUGINS], cwd=tmp_path)
    assert rc == 2 and "checkpoint" in _one_line(err)
    assert not (tmp_path / MARKER).exists() and (run / CHECKPOINT).read_bytes() == before


@pytest.mark.parametrize("plugin", ["evil_plugin.py", "evil_module"])
def test_a_crafted_config_imports_no_plugin_unless_named(tmp_path, warm, finished, plugin):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    code = f"import pathlib\npathlib.Path({str(tmp_path / MARKER)!r}).touch()\n"
    (tmp_path / "evil_plugin.py").write_text(code)
    (tmp_path / "evil_module.py").write_text(code)
    config = json.loads((run / "config.json").read_text())
    config["plugins"] = [*config["plugins"], str(tmp_path / plugin) if plugin.endswith(".py") else plugin]
    (run / "config.json").write_text(json.dumps(config))
    before = (run / "config.json").read_bytes()
    for argv in (["resume", run, "--steps", "8"], ["info", run], ["report", run]):
        rc, _, err = warm.run(argv, cwd=tmp_path)
        assert not (tmp_path / MARKER).exists(), argv
    rc, _, err = warm.run(["resume", run, "--steps", "8"], cwd=tmp_path)
    assert rc == 2 and "--plugin" in _one_line(err)
    # naming only the trusted ones resumes (the run's own strategy needs no evil plug-in) and still imports nothing else
    rc, _, err = warm.run(["resume", run, "--steps", "6", *PLUGINS], cwd=tmp_path)
    assert rc == 0, err
    assert not (tmp_path / MARKER).exists() and (run / "config.json").read_bytes() != before
    assert json.loads((run / "config.json").read_text())["plugins"] == [str(p) for p in PLUGINS[1::2]]


def test_a_failed_resume_leaves_config_json_as_it_was(tmp_path, warm, finished):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / CHECKPOINT).write_bytes(b"PK\x03\x04 not really a zip")
    before = (run / "config.json").read_bytes()
    rc, _, err = warm.run(["resume", run, "--evals", "100", *PLUGINS])
    assert rc == 2 and "checkpoint" in _one_line(err)
    assert (run / "config.json").read_bytes() == before


def test_info_survives_a_corrupt_history_line(tmp_path, warm, finished):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    lines = (run / "history.jsonl").read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]  # cut mid-row, as an editor or a full disk would
    (run / "history.jsonl").write_text("\n".join(lines) + "\n")
    rc, out, err = warm.run(["info", run])
    assert rc == 0, err
    assert "step 4" in out and "1 unreadable line(s) skipped (line 2)" in out


@pytest.mark.parametrize("kind", ["spaces", "renderers"])
def test_the_listings_hints_name_exist(warm, kind):
    rc, out, err = warm.run([kind])
    assert rc == 0 and ("pca" if kind == "spaces" else "kokoro") in out, err
