"""The command line as a user meets it: listings, clear one-line errors with exit 2, runs, resume, export."""
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

REPO = Path(__file__).resolve().parents[1]
FAKES = str(REPO / "tests" / "fakes.py")


def cli(*args, cwd=None, timeout=120):
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "voicesearch", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def fake_clone(*args):
    return ("clone", "--strategy", "hill-climb", "--plugin", FAKES, "--renderer", "fake", "--scorer", "fake-spectrum",
            "--space", "offset", *args)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """A real-ish 3 s clip: harmonic voice-like tone with a transcript beside it."""
    d = tmp_path_factory.mktemp("target")
    t = np.arange(3 * 22050) / 22050
    wave = 0.3 * np.sin(2 * np.pi * 140 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    path = d / "me.flac"
    sf.write(path, np.stack([wave, wave * 0.9], 1), 22050)  # stereo, 22.05 kHz, flac
    path.with_suffix(".txt").write_text("hello world, this is me")
    return path


def test_lists_strategies_and_scorers():
    res = cli("strategies")
    assert res.returncode == 0 and "random-walk" in res.stdout and "cma-es" in res.stdout
    res = cli("scorers", "--plugin", FAKES)
    assert res.returncode == 0 and "resemblyzer" in res.stdout and "fake-spectrum" in res.stdout


def test_help_has_examples():
    res = cli("clone", "--help")
    assert res.returncode == 0 and "Examples" in res.stdout


def test_help_shows_no_value_type_for_flags():
    top, clone = cli("--help"), cli("clone", "--help")
    assert top.returncode == clone.returncode == 0
    assert "--help" in top.stdout and "<bool>" not in top.stdout + clone.stdout  # flags take no value
    assert "<int>" in clone.stdout  # options that take one still say which


def _write(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.wav", "does not exist"),
    (lambda d: _write(d / "empty.wav", b""), "empty"),
    (lambda d: _write(d / "junk.wav", b"RIFF....not audio at all" * 10), "cannot read audio"),
    (lambda d: sf.write(d / "silent.wav", np.zeros(24000 * 2), 24000) or d / "silent.wav", "silent"),
    (lambda d: sf.write(d / "short.wav", 0.3 * np.ones(8000), 16000) or d / "short.wav", "at least 1 s"),
    (lambda d: sf.write(d / "long.wav", 0.1 * np.random.randn(8000 * 20), 8000) or d / "long.wav", "over the 10 s cap"),
])
def test_bad_audio_is_one_line_exit_2_and_no_output(tmp_path, make, message):
    audio = make(tmp_path)
    out = tmp_path / "run"
    res = cli(*fake_clone(audio, "--text", "hi there", "--out", out, "--steps", "2", "--max-audio-seconds", "10"))
    assert res.returncode == 2, res.stderr
    lines = [l for l in res.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in res.stderr
    assert not out.exists()


def test_bad_names_exit_2_and_leave_existing_output_untouched(tmp_path, speech):
    out = tmp_path / "run"
    out.mkdir()
    (out / "voice_best.pt").write_bytes(b"precious")
    for args, message in [(("--strategy", "random-wlak"), "random-walk"),
                          (("--scorer", "resemblizer"), "did you mean resemblyzer"),
                          ((), "already exists")]:
        res = cli(*fake_clone(speech, "--out", out, "--steps", "2", *args))
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert (out / "voice_best.pt").read_bytes() == b"precious" and len(list(out.iterdir())) == 1
    res = cli("render", "hi", "--voice", tmp_path / "nope.pt")
    assert res.returncode == 2 and "does not exist" in res.stderr


def test_clone_writes_run_dir_then_resume_info_export(tmp_path, speech):
    out = tmp_path / "run"
    res = cli(*fake_clone(speech, "--out", out, "--steps", "6", "--batch", "4", "--checkpoint-every", "2", "--strategy", "hill-climb"))
    assert res.returncode == 0, res.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["strategy"]["name"] == "hill-climb" and Path(config["target"]["paths"][0]).is_absolute()
    rows = [json.loads(l) for l in (out / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7)) and rows[-1]["evals"] == 24
    for f in ("voice_best.pt", "voice_best.npz", "voice_final.pt", "checkpoint.pt", "samples/best_target_text.wav"):
        assert (out / f).is_file(), f
    res = cli("resume", out, "--steps", "9")  # config.json names a plug-in file: not loaded unless named again
    assert res.returncode == 2 and "--plugin" in res.stderr, res.stderr
    res = cli("resume", out, "--steps", "9", "--plugin", FAKES)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(l) for l in (out / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 10))
    res = cli("info", out)
    assert res.returncode == 0 and "step 9" in res.stdout
    for suffix in (".pt", ".npz", ".bin"):
        res = cli("export", out, "--out", tmp_path / f"exported{suffix}", "--name", "me")
        assert res.returncode == 0, res.stderr
    best = torch.load(out / "voice_final.pt", weights_only=True)
    assert torch.equal(torch.from_numpy(np.load(tmp_path / "exported.bin")["me"]), best)


def test_user_strategy_from_examples_runs_by_name(tmp_path, speech):
    out = tmp_path / "run"
    res = cli(*fake_clone(speech, "--out", out, "--steps", "3", "--batch", "4",
                          "--plugin", REPO / "examples" / "custom_strategy.py", "--strategy", "shrinking-climb",
                          "--strategy-opt", "step=0.2"))
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "config.json").read_text())["strategy"] == {"name": "shrinking-climb", "options": {"step": 0.2}}
    res = cli(*fake_clone(speech, "--out", tmp_path / "run2", "--steps", "3", "--plugin",
                          REPO / "examples" / "custom_strategy.py", "--strategy", "shrinking-climb", "--strategy-opt", "stepp=1"))
    assert res.returncode == 2 and "stepp" in res.stderr


def test_ctrl_c_checkpoints_and_exits_130(tmp_path, speech):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "voicesearch", *map(str, fake_clone(
        speech, "--out", out, "--steps", "100000", "--batch", "2", "--strategy", "hill-climb", "--checkpoint-every", "100000"))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not ((out / "history.jsonl").exists() and (out / "history.jsonl").stat().st_size > 0):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "voicesearch resume" in stderr
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    steps = len((out / "history.jsonl").read_text().splitlines())
    assert state["progress"]["step"] == steps >= 1


def test_a_usage_error_is_one_message_and_exit_2_not_a_traceback(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "voicesearch", "evaluate", str(tmp_path), "--no-such-option"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "No such option" in done.stderr and "Traceback" not in done.stderr and "╭─ Traceback" not in done.stderr
