"""A corpus of bad input, made here (no stored binaries): every case must exit 2 with exactly one line on
stderr, no traceback, and leave every file that was there byte-identical (and nothing new behind).

Each case builds its inputs in its own folder; the folder is fingerprinted (every file's bytes, every
directory) before and after the command. Runs use the fake sine renderer and spectrum scorer of
tests/fakes.py, so nothing here needs Kokoro; the commands run through a warm, forking CLI (tests/warm_cli.py).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.warm_cli import WarmCli

REPO = Path(__file__).resolve().parents[1]
FAKES = str(REPO / "tests" / "fakes.py")
PLUGINS = ["--plugin", FAKES]
FAKE = [*PLUGINS, "--renderer", "fake", "--scorer", "fake-spectrum", "--space", "offset", "--strategy", "cma-es",
        "--batch", "4", "--checkpoint-every", "2"]


@pytest.fixture(scope="module")
def warm():
    with WarmCli() as cli:
        yield cli


def _speech(path: Path, seconds: float = 3.0, rate: int = 22050, text: str | None = "hello world, this is me") -> Path:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, 0.3 * np.sin(2 * np.pi * 140 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)), rate)
    if text is not None:
        path.with_suffix(".txt").write_text(text)
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, warm):
    """A real finished run (cma-es on the fake renderer, 4 steps) to copy into resume/info/export cases."""
    d = tmp_path_factory.mktemp("finished")
    target = _speech(d / "me.wav")
    rc, _, err = warm.run(["clone", target, *FAKE, "--steps", "4", "--out", d / "run"])
    assert rc == 0, err
    return d / "run"


def _fingerprint(root: Path) -> dict[str, str]:
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        found[rel] = "dir" if path.is_dir() and not path.is_symlink() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _copy_run(run: Path, d: Path) -> Path:
    dest = d / "run"
    shutil.copytree(run, dest)
    return dest


def _edit_config(run: Path, **changes) -> None:
    config = json.loads((run / "config.json").read_text())
    for key, value in changes.items():
        parts = key.split("__")
        node = config
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    (run / "config.json").write_text(json.dumps(config))


def _zip_with(path: Path, members: dict[str, bytes], compress: bool = True) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _torch_bomb(path: Path) -> Path:
    """A .pt whose single tensor expands to 256 MiB of zeros from a ~250 KB deflated zip."""
    buf = io.BytesIO()
    torch.save(torch.zeros(510, 1, 256), buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src:
        members = {i.filename: src.read(i.filename) for i in src.infolist()}
    data_key = next(k for k in members if "/data/" in k and not k.endswith(".pkl"))
    members[data_key] = b"\0" * (256 * 2**20)
    return _zip_with(path, members)


def _npz_lying_header(path: Path) -> Path:
    """An .npz whose .npy header declares a (2**33,) float64 array but holds 16 bytes."""
    header = {"descr": "<f8", "fortran_order": False, "shape": (2**33,)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return _zip_with(path, {"voice.npy": buf.getvalue() + b"\0" * 16})  # the header writer writes the magic too


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch voicesearch_pwned",))


def _wav_bytes(seconds: float = 2.0, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(np.arange(int(seconds * rate)) / 5), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _plugin(d: Path, name: str, body: str) -> str:
    (d / name).write_text(body)
    return str(d / name)


def _unwritable(d: Path) -> Path:
    """A folder this process cannot create anything in (root ignores modes: use sysfs there)."""
    if os.geteuid() == 0:
        if not Path("/sys/kernel").is_dir():
            pytest.skip("no unwritable place for root here")
        return Path("/sys/kernel/voicesearch-test")
    ro = d / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    return ro / "run"


# (id, build(d, ctx) -> argv, a phrase the one line must hold)
CASES = [
    # ---- clone: budgets and options out of range
    ("evals-zero", lambda d, c: ["clone", c["wav"], *FAKE, "--evals", "0", "--out", d / "out"], "--evals 0"),
    ("evals-negative", lambda d, c: ["clone", c["wav"], *FAKE, "--evals", "-5", "--out", d / "out"], "--evals -5"),
    ("seconds-negative", lambda d, c: ["clone", c["wav"], *FAKE, "--seconds", "-1", "--out", d / "out"], "--seconds"),
    ("seconds-zero", lambda d, c: ["clone", c["wav"], *FAKE, "--seconds", "0", "--out", d / "out"], "--seconds"),
    ("seconds-nan", lambda d, c: ["clone", c["wav"], *FAKE, "--seconds", "nan", "--out", d / "out"], "--seconds"),
    ("steps-zero", lambda d, c: ["clone", c["wav"], *FAKE, "--steps", "0", "--out", d / "out"], "--steps 0"),
    ("batch-zero", lambda d, c: ["clone", c["wav"], *FAKE, "--batch", "0", "--out", d / "out"], "--batch"),
    ("batch-huge", lambda d, c: ["clone", c["wav"], *FAKE, "--batch", "1000000000000", "--out", d / "out"], "at most"),
    ("batch-word", lambda d, c: ["clone", c["wav"], *FAKE, "--batch", "lots", "--out", d / "out"], "--batch"),
    ("checkpoint-every-zero", lambda d, c: ["clone", c["wav"], *FAKE, "--checkpoint-every", "0", "--out", d / "out"],
     "--checkpoint-every"),
    ("max-audio-seconds-zero", lambda d, c: ["clone", c["wav"], *FAKE, "--max-audio-seconds", "0", "--out", d / "out"],
     "--max-audio-seconds"),
    ("popsize-huge", lambda d, c: ["clone", c["wav"], *FAKE, "--strategy-opt", "popsize=99999999", "--steps", "2",
                                   "--out", d / "out"], "popsize"),
    ("option-not-key-value", lambda d, c: ["clone", c["wav"], *FAKE, "--strategy-opt", "sigma0", "--out", d / "out"],
     "key=value"),
    ("unknown-strategy", lambda d, c: ["clone", c["wav"], *PLUGINS, "--renderer", "fake", "--scorer", "fake-spectrum",
                                       "--strategy", "cma-ess", "--out", d / "out"], "cma-es"),
    ("unknown-scorer", lambda d, c: ["clone", c["wav"], *PLUGINS, "--renderer", "fake", "--scorer", "resemblizer",
                                     "--out", d / "out"], "resemblyzer"),
    ("unknown-space", lambda d, c: ["clone", c["wav"], *FAKE, "--space", "pcaa", "--out", d / "out"], "space"),
    ("unknown-renderer", lambda d, c: ["clone", c["wav"], *PLUGINS, "--renderer", "kokoroo", "--scorer", "fake-spectrum",
                                       "--out", d / "out"], "renderer"),
    ("unknown-device", lambda d, c: ["clone", c["wav"], *FAKE, "--device", "quantum", "--steps", "2", "--out", d / "out"],
     "device"),
    ("every-stock-voice-excluded", lambda d, c: ["clone", c["wav"], *FAKE, "--steps", "2", "--out", d / "out",
                                                 "--voices", c["voices"](2), "--exclude", "v0", "--exclude", "v1"],
     "no stock voice"),
    # ---- clone: target audio
    ("audio-missing", lambda d, c: ["clone", d / "nope.wav", "--text", "hi there", *FAKE, "--out", d / "out"],
     "does not exist"),
    ("audio-empty", lambda d, c: ["clone", c["put"]("empty.wav", b""), "--text", "hi there", *FAKE, "--out", d / "out"],
     "empty"),
    ("audio-junk", lambda d, c: ["clone", c["put"]("junk.wav", b"RIFF\x00\x00not audio" * 40), "--text", "hi there", *FAKE,
                                 "--out", d / "out"], "cannot read audio"),
    ("audio-truncated-header", lambda d, c: ["clone", c["put"]("cut.wav", _wav_bytes()[:12000]), "--text", "hi there",
                                             *FAKE, "--out", d / "out"], "truncated"),
    ("audio-silent", lambda d, c: ["clone", c["sf"]("silent.wav", np.zeros(32000), 16000), "--text", "hi there", *FAKE,
                                   "--out", d / "out"], "silent"),
    ("audio-too-short", lambda d, c: ["clone", c["sf"]("short.wav", 0.3 * np.ones(4000), 16000), "--text", "hi there",
                                      *FAKE, "--out", d / "out"], "at least 1 s"),
    ("audio-nan", lambda d, c: ["clone", c["sf"]("nan.wav", np.full(32000, np.nan, dtype=np.float32), 16000, "FLOAT"),
                                "--text", "hi there", *FAKE, "--out", d / "out"], "NaN"),
    ("audio-too-long", lambda d, c: ["clone", c["sf"]("long.wav", 0.1 * np.random.default_rng(0).standard_normal(8000 * 20),
                                                      8000), "--text", "hi", *FAKE, "--max-audio-seconds", "10",
                                     "--out", d / "out"], "cap"),
    ("audio-is-a-folder", lambda d, c: ["clone", d, "--text", "hi there", *FAKE, "--out", d / "out"], "not a file"),
    # ---- clone: transcripts
    ("transcript-punctuation-only", lambda d, c: ["clone", c["wav"], "--text", "?! ... --", *FAKE, "--out", d / "out"],
     "no words"),
    ("transcript-5000-chars", lambda d, c: ["clone", c["wav"], "--text", "word " * 1000, *FAKE, "--out", d / "out"],
     "characters"),
    ("transcript-file-missing", lambda d, c: ["clone", c["wav_bare"], "--text-file", d / "nope.txt", *FAKE,
                                              "--out", d / "out"], "does not exist"),
    ("transcript-file-not-utf8", lambda d, c: ["clone", c["wav_bare"], "--text-file", c["put"]("t.txt", b"\xff\xfe\xfa bad"),
                                               *FAKE, "--out", d / "out"], "UTF-8"),
    ("transcript-file-empty", lambda d, c: ["clone", c["wav_bare"], "--text-file", c["put"]("e.txt", b"  \n"), *FAKE,
                                            "--out", d / "out"], "empty"),
    # ---- clone: the output directory
    ("out-not-empty", lambda d, c: ["clone", c["wav"], *FAKE, "--out", c["put"]("full/voice_best.pt", b"precious").parent],
     "already exists"),
    ("out-is-a-file", lambda d, c: ["clone", c["wav"], *FAKE, "--out", c["put"]("afile", b"data")], "already exists"),
    ("out-under-a-file", lambda d, c: ["clone", c["wav"], *FAKE, "--out", c["put"]("plain", b"x") / "run"], "run directory"),
    ("out-unwritable", lambda d, c: ["clone", c["wav"], *FAKE, "--out", _unwritable(d)], "run directory"),
    # ---- clone: plug-ins
    ("plugin-missing", lambda d, c: ["clone", c["wav"], *FAKE, "--plugin", d / "nope.py", "--out", d / "out"],
     "does not exist"),
    ("plugin-raises", lambda d, c: ["clone", c["wav"], *FAKE, "--plugin", _plugin(d, "bad.py", "raise ValueError('boom')\n"),
                                    "--out", d / "out"], "boom"),
    ("plugin-sys-exit", lambda d, c: ["clone", c["wav"], *FAKE, "--plugin", _plugin(d, "quit.py", "import sys\nsys.exit(0)\n"),
                                      "--out", d / "out"], "sys.exit"),
    ("plugin-replaces-builtin", lambda d, c: ["clone", c["wav"], *FAKE, "--plugin", _plugin(
        d, "shadow.py", "from voicesearch.registry import register\n@register('strategies', 'cma-es')\nclass Broken:\n"
                        "    pass\n"), "--out", d / "out"], "already has"),
    ("plugin-module-missing", lambda d, c: ["clone", c["wav"], *FAKE, "--plugin", "no_such_module_xyz", "--out", d / "out"],
     "no_such_module_xyz"),
    # ---- resume
    ("resume-missing", lambda d, c: ["resume", d / "nope"], "not a run directory"),
    ("resume-not-a-run", lambda d, c: ["resume", c["put"]("plain/readme.txt", b"hi").parent], "not a run directory"),
    ("resume-config-not-json", lambda d, c: ["resume", c["run"](lambda r: (r / "config.json").write_text("{oops")), *PLUGINS],
     "not valid JSON"),
    ("resume-config-a-list", lambda d, c: ["resume", c["run"](lambda r: (r / "config.json").write_text("[]")), *PLUGINS],
     "JSON object"),
    ("resume-config-budget-word", lambda d, c: ["resume", c["run"](lambda r: _edit_config(r, budget__steps="many")), *PLUGINS],
     "budget.steps"),
    ("resume-config-strategy-number", lambda d, c: ["resume", c["run"](lambda r: _edit_config(r, strategy=5)), *PLUGINS],
     "strategy"),
    ("resume-config-batch-huge", lambda d, c: ["resume", c["run"](lambda r: _edit_config(r, batch_size=10**9)), *PLUGINS],
     "batch_size"),
    ("resume-evals-zero", lambda d, c: ["resume", c["run"](), "--evals", "0", *PLUGINS], "--evals 0"),
    ("resume-budget-spent", lambda d, c: ["resume", c["run"](), *PLUGINS], "spent its budget"),
    ("resume-plugin-not-named", lambda d, c: ["resume", c["run"](), "--steps", "9"], "--plugin"),
    ("resume-checkpoint-garbage", lambda d, c: ["resume", c["run"](lambda r: (r / "checkpoint.pt").write_bytes(b"\0" * 99)),
                                                "--steps", "9", *PLUGINS], "checkpoint"),
    ("resume-checkpoint-pickle", lambda d, c: ["resume", c["run"](lambda r: torch.save({"x": _Evil()}, r / "checkpoint.pt")),
                                               "--steps", "9", *PLUGINS], "checkpoint"),
    ("resume-checkpoint-bomb", lambda d, c: ["resume", c["run"](lambda r: _torch_bomb(r / "checkpoint.pt")), "--steps", "9",
                                             *PLUGINS], "compressed"),
    # ---- export / render / info / evaluate
    ("export-out-exists", lambda d, c: ["export", c["run"](), "--out", c["put"]("mine.pt", b"precious")], "--force"),
    ("export-out-is-a-folder", lambda d, c: ["export", c["run"](), "--out", c["put"]("folder.pt/keep", b"k").parent],
     "directory"),
    ("export-out-folder-missing", lambda d, c: ["export", c["run"](), "--out", d / "no" / "such" / "v.pt"], "does not exist"),
    ("export-voice-bomb", lambda d, c: ["export", _torch_bomb(d / "bomb.pt"), "--out", d / "o.pt"], "voice"),
    ("export-voice-pickle", lambda d, c: ["export", c["save"]("evil.pt", {"v": _Evil()}), "--out", d / "o.pt"],
     "not a plain tensor"),
    ("export-npz-lying-shape", lambda d, c: ["export", _npz_lying_header(d / "lie.npz"), "--out", d / "o.pt"], "declares"),
    ("export-not-a-voice", lambda d, c: ["export", c["put"]("notes.txt", b"hello"), "--out", d / "o.pt"], "voice"),
    ("render-out-exists", lambda d, c: ["render", "Hello there.", "--out", c["put"]("hello.wav", b"precious")], "--force"),
    ("render-out-is-a-folder", lambda d, c: ["render", "Hello there.", "--out", c["put"]("x.wav/keep", b"k").parent],
     "directory"),
    ("render-out-mp3", lambda d, c: ["render", "Hello there.", "--out", d / "hello.mp3"], ".wav"),
    ("render-speed-negative", lambda d, c: ["render", "Hello there.", "--speed", "-1", "--out", d / "h.wav"], "--speed"),
    ("info-config-wrong-shape", lambda d, c: ["info", c["run"](lambda r: (r / "config.json").write_text('{"target": 1}'))],
     "missing"),
    ("evaluate-json-is-a-folder", lambda d, c: ["evaluate", c["run"](), "--target", c["wav"], "--json",
                                                c["put"]("res.json/keep", b"k").parent], "directory"),
    ("evaluate-unknown-renderer", lambda d, c: ["evaluate", c["run"](), "--target", c["wav"], "--renderer", "no-such"],
     "no-such"),
]


@pytest.mark.parametrize("name, build, phrase", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(tmp_path, warm, finished_run, name, build, phrase):
    d = tmp_path / "case"
    d.mkdir()

    def put(rel: str, data: bytes) -> Path:
        path = d / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def write_sf(rel: str, wave, rate: int, subtype: str = "PCM_16") -> Path:
        sf.write(d / rel, wave, rate, subtype=subtype)
        return d / rel

    def run_copy(edit=None) -> Path:
        run = _copy_run(finished_run, d)
        if edit:
            edit(run)
        return run

    def save(rel: str, obj) -> Path:
        torch.save(obj, d / rel)
        return d / rel

    def voices(n: int) -> Path:
        (d / "voices").mkdir()
        for i in range(n):
            torch.save(torch.randn(510, 1, 256, generator=torch.Generator().manual_seed(i)) * 0.3, d / "voices" / f"v{i}.pt")
        return d / "voices"

    ctx = {"wav": _speech(d / "me.wav"), "wav_bare": _speech(d / "bare.wav", text=None), "put": put, "sf": write_sf,
           "run": run_copy, "save": save, "voices": voices}
    argv = build(d, ctx)
    before = _fingerprint(d)
    rc, _, err = warm.run(argv, cwd=d)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1, f"rc={rc}\n{err}"
    assert "Traceback" not in err and lines[0].startswith("error: "), err
    assert phrase in lines[0], lines[0]
    assert _fingerprint(d) == before, "a file changed, or something was left behind"
    assert not (d / "voicesearch_pwned").exists()


def test_the_corpus_is_large():
    assert len(CASES) >= 40
