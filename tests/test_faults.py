"""Exact resume whatever stops a run: kill -9, one Ctrl-C, two Ctrl-Cs, out of memory, cuFFT failures, sys.exit.

Every interrupted run is continued (`resume`, or the same `clone` again when nothing was kept) and must end
with the same history and the same final voice as the uninterrupted run. The search is CMA-ES (its state
is replayed from plain data on resume) on the fake sine renderer; signals are real, sent to real processes
(forked from a warm CLI, tests/warm_cli.py); tests/faults.py slows renders down so that a signal lands
inside a step, and injects memory failures.

The in-process tests at the top drive the same paths deterministically (no timing).
"""
from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.fakes import FakeRenderer, FakeSpectrumScorer, fake_target
from tests.warm_cli import WarmCli
from voicesearch.errors import SearchStopped
from voicesearch.loop import Budget, Search
from voicesearch.run import CHECKPOINT, RunRecorder, load_checkpoint, read_checkpoint, read_history
from voicesearch.space import OffsetSpace

REPO = Path(__file__).resolve().parents[1]
PLUGINS = ["--plugin", REPO / "tests" / "fakes.py", "--plugin", REPO / "tests" / "faults.py"]
STEPS = 8
RUN = [*PLUGINS, "--renderer", "faulty-fake", "--scorer", "fake-spectrum", "--space", "offset", "--strategy", "cma-es",
       "--batch", "4", "--checkpoint-every", "3", "--steps", str(STEPS), "--seed", "3"]


def _rows(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "time")} for r in read_history(run)]


def _final(run: Path) -> torch.Tensor:
    return torch.load(run / "voice_final.pt", weights_only=True)


# ------------------------------------------------------------------ in-process: a stop inside a step, deterministically


class Failing(FakeRenderer):
    """Renders normally, then raises `error` at render call `at` (and, with `times`, for that many calls)."""

    def __init__(self, at: int = 0, error: BaseException | None = None, times: int = 10**9):
        super().__init__()
        self.at, self.error, self.times = at, error, times

    def render(self, packs, text, **kwargs):
        if self.error is not None and self.at <= self.calls + 1 < self.at + self.times:
            self.calls += 1
            raise self.error
        return super().render(packs, text, **kwargs)


def _cma_search(renderer, steps=STEPS):
    from strategies.cma_es import CMAES

    stock = renderer.stock_voices()
    strategy = CMAES(OffsetSpace(stock), stock, torch.Generator().manual_seed(3), batch_size=4)
    search = Search(strategy, FakeSpectrumScorer(), renderer, fake_target(), Budget(steps=steps))
    search.oom_wait = 0.0
    return search


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run = tmp_path_factory.mktemp("straight")
    search = _cma_search(FakeRenderer())
    search.callbacks.append(RunRecorder(run, checkpoint_every=3))
    search.run()
    return run


STOPS = [
    ("second-ctrl-c", KeyboardInterrupt(), KeyboardInterrupt),
    ("out-of-memory", torch.OutOfMemoryError("CUDA out of memory (injected)"), SearchStopped),
    ("cufft", RuntimeError("cuFFT error: CUFFT_INTERNAL_ERROR"), SearchStopped),
    ("plug-in-exit", SystemExit(0), SearchStopped),
]


@pytest.mark.parametrize("at", [1, 3, 5, 7])
@pytest.mark.parametrize("name, error, raised", STOPS, ids=[s[0] for s in STOPS])
def test_a_stop_inside_a_step_keeps_the_last_whole_step_and_resumes_exactly(tmp_path, straight, at, name, error, raised):
    search = _cma_search(Failing(at, error))
    recorder = RunRecorder(tmp_path, checkpoint_every=3)
    search.callbacks.append(recorder)
    with pytest.raises(raised):
        search.run()
    whole = at - 1  # render call n is step n (one text); it failed, so steps 1..n-1 are whole
    assert search.mid_step and recorder.saved_step == (whole or None)
    if not whole:
        assert not (tmp_path / CHECKPOINT).exists()
        return
    assert read_checkpoint(tmp_path / CHECKPOINT)["progress"]["step"] == whole  # never a state past ask()
    assert len(read_history(tmp_path)) == whole
    resumed = _cma_search(FakeRenderer())
    load_checkpoint(resumed, tmp_path / CHECKPOINT)
    resumed.callbacks.append(RunRecorder(tmp_path, checkpoint_every=3))
    resumed.run()
    assert _rows(tmp_path) == _rows(straight) and torch.equal(_final(tmp_path), _final(straight))


def test_memory_pressure_that_passes_is_retried_and_changes_nothing(tmp_path, straight):
    search = _cma_search(Failing(4, torch.OutOfMemoryError("CUDA out of memory (injected)"), times=2))
    search.callbacks.append(RunRecorder(tmp_path, checkpoint_every=3))
    search.run()
    assert _rows(tmp_path) == _rows(straight) and torch.equal(_final(tmp_path), _final(straight))


def test_other_errors_are_not_taken_for_memory(tmp_path):
    search = _cma_search(Failing(4, RuntimeError("shapes do not match")))
    search.callbacks.append(RunRecorder(tmp_path, checkpoint_every=3))
    with pytest.raises(RuntimeError, match="shapes"):
        search.run()
    assert read_checkpoint(tmp_path / CHECKPOINT)["progress"]["step"] == 3  # still the last whole step


# ------------------------------------------------------------------ real processes, real signals


@pytest.fixture(scope="module")
def warm():
    with WarmCli() as cli:
        yield cli


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    d = tmp_path_factory.mktemp("target")
    t = np.arange(3 * 22050) / 22050
    sf.write(d / "me.wav", 0.3 * np.sin(2 * np.pi * 140 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)), 22050)
    (d / "me.txt").write_text("hello world, this is me")
    return d / "me.wav"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, warm, target):
    run = tmp_path_factory.mktemp("reference") / "run"
    rc, _, err = warm.run(["clone", target, *RUN, "--out", run])
    assert rc == 0, err
    assert len(_rows(run)) == STEPS
    return run


def _wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def _continue(warm, run: Path, target: Path) -> None:
    if run.exists():
        rc, _, err = warm.run(["resume", run, *PLUGINS])
    else:  # nothing was kept: the same command again
        rc, _, err = warm.run(["clone", target, *RUN, "--out", run])
    assert rc == 0, err


MATRIX = [(kind, rows) for kind in ("kill-9", "ctrl-c", "ctrl-c-twice") for rows in (0, 2, 5)]


@pytest.mark.parametrize("kind, rows", MATRIX, ids=[f"{k}-after-{r}-steps" for k, r in MATRIX])
def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, warm, target, reference, kind, rows):
    run = tmp_path / "run"
    mark = tmp_path / "render-"
    child = warm.start(["clone", target, *RUN, "--out", run], env={"FAULT_RENDER_DELAY": "1.0", "FAULT_MARK": str(mark)})
    _wait_for(Path(f"{mark}{rows + 1}"))  # step rows + 1 has started rendering (for 1 s): `rows` steps are whole
    time.sleep(0.05)
    if kind == "kill-9":
        os.kill(child.pid, signal.SIGKILL)
    else:
        os.kill(child.pid, signal.SIGINT)
        if kind == "ctrl-c-twice":
            time.sleep(0.1)  # apart, or the kernel merges the two
            os.kill(child.pid, signal.SIGINT)
    rc, _, err = warm.wait(child)
    late = len(read_history(run)) > rows if run.exists() else False  # a busy machine let step rows + 1 finish first
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    if kind == "kill-9":
        assert rc == -signal.SIGKILL
    else:
        assert rc == 130, err
        last = lines[-1]
        saved = re.search(r"checkpoint of step (\d+) saved", last)
        if saved:  # the line says which step the checkpoint holds: it must be true
            assert read_checkpoint(run / CHECKPOINT)["progress"]["step"] == int(saved.group(1)), last
            assert len(read_history(run)) >= int(saved.group(1))
        else:
            assert "nothing was saved" in last and not run.exists(), last
        if kind == "ctrl-c-twice" and rows and not late:
            assert "which was dropped" in last, last  # the second Ctrl-C stopped inside a step
        if kind == "ctrl-c" and rows:
            assert f"after step {rows + 1}" in last, last  # the first Ctrl-C finishes the step it is in
    if run.exists() and (run / CHECKPOINT).exists():
        step = read_checkpoint(run / CHECKPOINT)["progress"]["step"]
        assert [r["step"] for r in read_history(run)][:step] == list(range(1, step + 1))
    _continue(warm, run, target)
    assert _rows(run) == _rows(reference)
    assert torch.equal(_final(run), _final(reference))


FAILURES = [
    ("out-of-memory", {"FAULT_FAIL_FROM_CALL": "5"}, 3, "out of memory"),
    ("cufft", {"FAULT_FAIL_FROM_CALL": "5", "FAULT_FAIL_KIND": "cufft"}, 3, "CUFFT_INTERNAL_ERROR"),
    ("plug-in-exit", {"FAULT_EXIT_AT_CALL": "5"}, 3, "sys.exit(0)"),
    ("passing-pressure", {"FAULT_FAIL_FROM_CALL": "5", "FAULT_FAIL_CALLS": "2"}, 0, None),
]


@pytest.mark.parametrize("name, env, code, phrase", FAILURES, ids=[f[0] for f in FAILURES])
def test_failures_stop_with_a_true_line_and_a_resumable_checkpoint(tmp_path, warm, target, reference, name, env, code, phrase):
    run = tmp_path / "run"
    rc, _, err = warm.run(["clone", target, *RUN, "--out", run], env=env)
    assert rc == code and "Traceback" not in err, err
    if code:
        last = [line for line in err.splitlines() if line.strip()][-1]
        assert phrase in last and "during step 5, which was dropped; checkpoint of step 4 saved" in last, last
        assert f"voicesearch resume {run}" in last
        assert read_checkpoint(run / CHECKPOINT)["progress"]["step"] == 4
        assert json.loads((run / "config.json").read_text())["budget"]["steps"] == STEPS
        _continue(warm, run, target)
    assert _rows(run) == _rows(reference) and torch.equal(_final(run), _final(reference))
