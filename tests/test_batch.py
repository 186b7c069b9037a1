"""`voicesearch batch` without Kokoro: reading targets (folders, CSV/TSV/JSONL manifests), the grid of jobs, one-line
errors that write nothing, and a grid batch on a local Ray with the test plug-ins (tests/fakes.py)."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voicesearch.batch import Settings, plan_jobs, read_targets
from voicesearch.cpu import CPU_BATCH
from voicesearch.errors import InputError

REPO = Path(__file__).resolve().parents[1]
FAKES = str(REPO / "tests" / "fakes.py")


def cli(*args, timeout=600):
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "voicesearch", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def clip(path: Path, freq: float = 150.0, text: str | None = "hello world") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(2 * 16000) / 16000
    sf.write(path, 0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t)), 16000)
    if text is not None:
        path.with_suffix(".txt").write_text(text)
    return path


def test_a_folder_is_one_target_per_clip_and_one_per_subfolder(tmp_path):
    clip(tmp_path / "Ann Smith.wav")
    clip(tmp_path / "bob.flac")
    clip(tmp_path / "carol" / "1.wav")
    clip(tmp_path / "carol" / "2.wav", text=None)  # only the first clip's transcript is needed
    (tmp_path / "notes.md").write_text("not audio")
    targets = read_targets(tmp_path)
    assert [t.name for t in targets] == ["Ann_Smith", "bob", "carol"]
    assert [len(t.paths) for t in targets] == [1, 1, 2]
    assert all(Path(p).is_absolute() for t in targets for p in t.paths)


def test_manifests_csv_tsv_jsonl_with_per_target_settings(tmp_path):
    clip(tmp_path / "a.wav")
    clip(tmp_path / "b.wav", text=None)
    clip(tmp_path / "b2.wav", text=None)
    with open(tmp_path / "m.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "text", "name", "evals", "scorer_opt", "exclude"])
        w.writerow(["a.wav", "", "", "", "", ""])
        w.writerow(["b.wav", "words of b", "bee", "50", "target_sampling=subset:2;seed=3", "af_bella;am_adam"])
    a, b = read_targets(tmp_path / "m.csv")
    assert (a.name, a.text, a.options) == ("a", None, {})
    assert (b.name, b.text) == ("bee", "words of b")
    assert b.options == {"evals": 50, "scorer_opt": {"target_sampling": "subset:2", "seed": 3}, "exclude": ["af_bella", "am_adam"]}
    (tmp_path / "m.tsv").write_text("paths\ttext\tname\tstrategy\nb.wav;b2.wav\twords\tboth\trandom-walk\n")
    (t,) = read_targets(tmp_path / "m.tsv")
    assert len(t.paths) == 2 and t.options == {"strategy": "random-walk"}
    (tmp_path / "m.jsonl").write_text(json.dumps({"paths": ["b.wav", "b2.wav"], "text": "w", "name": "j",
                                                  "scorer_opt": {"vad": "none"}, "batch": "auto"}) + "\n\n")
    (t,) = read_targets(tmp_path / "m.jsonl")
    assert t.options == {"scorer_opt": {"vad": "none"}, "batch": "auto"}


@pytest.mark.parametrize("content, message", [
    ("path,text\nmissing.wav,hi\n", "does not exist"),
    ("path,text\nnotext.wav,\n", "no transcript"),
    ("path,name\na.wav,../evil\n", "names a folder"),
    ("path,name\na.wav,x\na.wav,X\n", "used twice"),
    ("path,colour\na.wav,red\n", "unknown column"),
    ("name,text\nx,hi\n", "path (or paths) column"),
    ("path,evals\na.wav,-3\n", "evals must be an integer"),
    ("path,seconds\na.wav,inf\n", "seconds must be a positive number"),
    ("path,scorer_opt\na.wav,novalue\n", "not key=value"),
    ("path\na.wav,extra\n", "more fields than the header"),
])
def test_bad_manifests_are_one_line_input_errors(tmp_path, content, message):
    clip(tmp_path / "a.wav")
    clip(tmp_path / "notext.wav", text=None)
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(InputError, match=re.escape(message)):
        read_targets(tmp_path / "m.csv")


def test_bad_jsonl_and_encodings(tmp_path):
    clip(tmp_path / "a.wav")
    (tmp_path / "m.jsonl").write_text('{"path": "a.wav"}\n{"path": \n')
    with pytest.raises(InputError, match="line 2 is not valid JSON"):
        read_targets(tmp_path / "m.jsonl")
    (tmp_path / "n.jsonl").write_text('["a.wav"]\n')
    with pytest.raises(InputError, match="must be a JSON object"):
        read_targets(tmp_path / "n.jsonl")
    (tmp_path / "m.csv").write_bytes(b"path\n\xff\xfe.wav\n")
    with pytest.raises(InputError, match="not UTF-8"):
        read_targets(tmp_path / "m.csv")
    with pytest.raises(InputError, match="manifest ending in"):
        read_targets(tmp_path / "a.wav")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="hold no target"):
        read_targets(tmp_path / "empty")


def test_the_grid_names_every_run_and_keeps_each_target_config_a_clone_config(tmp_path):
    clip(tmp_path / "a.wav")
    clip(tmp_path / "b.wav")
    settings = Settings(strategies=["random-walk", "cma-es"], scorers=["resemblyzer", "compose:0.5*ecapa+0.5*resemblyzer"],
                        evals=40, batch=4, voices=None)
    jobs = plan_jobs(tmp_path, settings)
    assert len(jobs) == 8 and len({j["run"] for j in jobs}) == 8
    assert jobs[0]["id"] == "a--random-walk--resemblyzer"
    assert jobs[3]["id"] == "a--cma-es--compose_0.5_ecapa_0.5_resemblyzer"
    c = jobs[0]["config"]
    assert c["budget"] == {"steps": None, "evals": 40, "seconds": None} and c["batch_size"] == 4
    assert c["target"]["paths"] == [str((tmp_path / "a.wav").resolve())]
    single = plan_jobs(tmp_path, Settings(strategies=["auto"], scorers=["resemblyzer"], device="cuda"))
    assert [j["id"] for j in single] == ["a", "b"] and single[0]["config"]["budget"]["evals"] == 768  # clone's on a GPU
    with pytest.raises(InputError, match="unknown strategy"):
        plan_jobs(tmp_path, Settings(strategies=["nope"], scorers=["resemblyzer"]))


def test_cli_errors_are_one_line_exit_2_and_write_nothing(tmp_path, monkeypatch, capsys):
    from voicesearch.cli import main

    clip(tmp_path / "t" / "a.wav")
    out = tmp_path / "B"
    cases = [
        (("batch", tmp_path / "t", "--out", out, "--strategy", "nope"), "unknown strategy"),
        (("batch", tmp_path / "t", "--out", out, "--evals", "0"), "--evals must be at least 1"),
        (("batch", tmp_path / "t", "--out", out, "--score-seconds", "-1"), "--score-seconds -1"),
        (("batch", tmp_path / "t", "--out", out, "--device", "cuda:1"), "places its workers itself"),
        (("batch", tmp_path / "missing", "--out", out), "do not exist"),
        (("batch",), "give TARGETS"),
        (("batch", "--resume", tmp_path / "t"), "not a batch folder"),
        (("batch", "--resume", out, "--evals", "5"), "leave out --evals"),
    ]
    (tmp_path / "B3").mkdir()
    (tmp_path / "B3" / "batch.json").write_text("{")
    cases.append((("batch", "--resume", tmp_path / "B3"), "is not valid JSON"))
    plan = {"version": 1, "status": {}, "jobs": [{"id": "a", "run": "runs/a", "config": {
        "target": {"paths": ["a.wav"]}, "strategy": {"name": "cma-es"}, "scorer": {"name": "resemblyzer"},
        "space": {"name": "auto"}, "renderer": {"name": "kokoro"}, "budget": {"evals": 4}, "batch_size": 10**9}}]}
    (tmp_path / "B4").mkdir()
    (tmp_path / "B4" / "batch.json").write_text(json.dumps(plan))
    cases.append((("batch", "--resume", tmp_path / "B4"), "batch_size must be an integer"))
    (tmp_path / "B2" / "x").mkdir(parents=True)
    cases.append((("batch", tmp_path / "t", "--out", tmp_path / "B2"), "already exists and is not empty"))
    for args, message in cases:
        monkeypatch.setattr(sys, "argv", ["voicesearch", *map(str, args)])
        with pytest.raises(SystemExit) as exit_:
            main()
        err = capsys.readouterr().err
        assert exit_.value.code == 2, (args, err)
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "t" / "batch.lock").exists()
    assert [p.name for p in (tmp_path / "B2").iterdir()] == ["x"]
    assert sorted(p.name for p in (tmp_path / "B4").iterdir()) == ["batch.json"]  # no lock file left in it
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed: said before any folder is made
    monkeypatch.setattr(sys, "argv", ["voicesearch", "batch", str(tmp_path / "t"), "--out", str(out)])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "pip install 'voicesearch[ray]'" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_grid_batch_on_local_ray_with_one_worker(tmp_path):
    """Two targets x two strategies with one CPU worker (which reuses its renderer and scorer from job to job)."""
    pytest.importorskip("ray")
    clip(tmp_path / "t" / "low.wav", 130)
    clip(tmp_path / "t" / "high.wav", 260)
    batch = tmp_path / "B"
    res = cli("batch", tmp_path / "t", "--out", batch, "--plugin", FAKES, "--renderer", "fake", "--scorer", "fake-spectrum",
              "-s", "hill-climb", "-s", "random-walk", "--space", "offset", "--steps", "4", "--workers", "1", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    # no --batch: clone's CPU default population, said once for the batch (not once per run)
    assert res.stderr.count(f"CPU defaults: population {CPU_BATCH}") == 1, res.stderr
    summary = json.loads((batch / "summary.json").read_text())
    assert summary["counts"]["done"] == 4
    assert sorted(j["id"] for j in summary["jobs"]) == ["high--hill-climb--fake-spectrum", "high--random-walk--fake-spectrum",
                                                        "low--hill-climb--fake-spectrum", "low--random-walk--fake-spectrum"]
    for job in summary["jobs"]:
        run = batch / job["run"]
        rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1, 2, 3, 4] and job["evaluations"] == rows[-1]["evals"]
        assert job["best"] == pytest.approx(rows[-1]["best"], abs=1e-6)
        config = json.loads((run / "config.json").read_text())
        assert config["strategy"]["name"] == job["strategy"] and config["batch_size"] == CPU_BATCH
        assert (run / "voice_final.pt").is_file() and (run / "report.html").is_file()
    again = cli("batch", "--resume", batch)  # plug-ins are code: a resume loads them only when named again
    assert again.returncode == 2 and f"--plugin {FAKES}" in again.stderr
    again = cli("batch", "--resume", batch, "--plugin", FAKES)  # nothing left to do
    assert again.returncode == 0 and "4 done before" in again.stdout


def test_batch_scaling_benchmark_arguments_targets_and_merged_rows(tmp_path, monkeypatch):
    """benchmarks/batch_scaling.py (run on GPUs, not here): its arguments, its choice of clips, its JSON rows merging."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import batch_scaling as bench

    for i in range(3):
        clip(tmp_path / "dev" / f"c{i}.flac")
    clip(tmp_path / "dev" / "no_text.wav", text=None)
    args = bench.parse_args(["--devset", str(tmp_path / "dev"), "--targets", "2", "--workers", "1,2", "--device", "cpu",
                             "--evals", "4", "--batch", "2", "--out", str(tmp_path / "r.json")])
    assert args.worker_counts == [1, 2] and args.evals == 4
    assert [p.name for p in bench.pick_targets(args.devset, 3)] == ["c0.flac", "c1.flac", "c2.flac"]
    with pytest.raises(InputError, match="has 3 clips"):
        bench.pick_targets(args.devset, 4)
    for bad in (["--workers", "0"], ["--workers", "a,b"], ["--evals", "0"]):
        with pytest.raises(SystemExit):
            bench.parse_args(["--devset", str(tmp_path / "dev"), *bad])
    s = bench.settings(args)
    assert (s.device, s.evals, s.batch, s.strategies) == ("cpu", 4, 2, ["auto"])
    monkeypatch.setattr(bench, "environment", lambda: {"gpus": []})
    one = bench.write(tmp_path / "r.json", [{"workers": 1, "targets_per_hour": 100.0}], args, "cmd 1")
    assert one["speedup_2gpu"] is None
    two = bench.write(tmp_path / "r.json", [{"workers": 2, "targets_per_hour": 190.0}], args, "cmd 2")
    assert [r["workers"] for r in two["rows"]] == [1, 2] and two["speedup_2gpu"] == 1.9
    assert two["commands"] == ["cmd 1", "cmd 2"]
