"""`voicesearch batch` and `voicesearch app` take `voicesearch clone`'s device defaults (voicesearch.cpu.resolve_defaults)
for what the user leaves unset, on a CPU and on a GPU (at the config level: "cuda" needs no GPU to plan), and what
the user gives wins. Clone's own config is read from the real `clone` command, stopped just before its search."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import typer
from typer.testing import CliRunner

from voicesearch.batch import Settings, plan_jobs
from voicesearch.cpu import CPU_BATCH, CPU_EVALS, CPU_SEARCH_SECONDS, GPU_DEFAULTS

TEXT = "Hello there, this is what the speaker says in the clip."
DEFAULTED = ("scorer", "budget", "batch_size", "score_seconds", "renderer", "stock_langs", "report_live_audio")


@pytest.fixture
def targets(tmp_path) -> Path:
    """A folder of two clips with transcripts (voiced tones: the configs never load the audio's speaker)."""
    folder = tmp_path / "targets"
    folder.mkdir()
    t = np.arange(2 * 16000) / 16000
    for name, freq in (("ann", 140.0), ("bob", 220.0)):
        sf.write(folder / f"{name}.wav", 0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t)), 16000)
        (folder / f"{name}.txt").write_text(TEXT)
    return folder


def pretend_gpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # config level only: nothing here runs on it


def clone_config(monkeypatch, clip: Path, out: Path, device: str, *args: str) -> dict:
    """The config `voicesearch clone CLIP --device DEVICE ARGS` runs, taken where the search would start."""
    from voicesearch import cli

    seen: dict = {}

    def stop_before_search(config, claim, parts, **_):
        seen["config"] = copy.deepcopy(config)
        raise typer.Exit(0)

    threads = torch.get_num_threads()  # clone on a CPU sets torch's threads for itself
    monkeypatch.setattr(cli, "_run", stop_before_search)
    try:
        res = CliRunner().invoke(cli.app, ["clone", str(clip), "--text", TEXT, "--device", device, "--out", str(out), *args])
    finally:
        torch.set_num_threads(threads)
    assert res.exit_code == 0 and "config" in seen, res.output
    return seen["config"]


def defaulted(config: dict) -> dict:
    out = {k: config.get(k) for k in DEFAULTED}
    out["scorer"] = config["scorer"]["name"]
    return out


@pytest.mark.parametrize("device", ["cpu", "cuda"], ids=["cpu", "gpu-config-level"])  # "cuda" would mark it GPU-only
def test_a_batch_with_nothing_given_takes_clones_defaults_on_the_device(targets, tmp_path, monkeypatch, device):
    if device == "cuda":
        pretend_gpu(monkeypatch)
    clone = clone_config(monkeypatch, targets / "ann.wav", tmp_path / "clone", device)
    notes: list[str] = []
    jobs = plan_jobs(targets, Settings(strategies=["auto"], device=device), notes=notes)
    assert [j["id"] for j in jobs] == ["ann", "bob"]
    for job in jobs:
        assert defaulted(job["config"]) == defaulted(clone)
        assert job["scorer"] == clone["scorer"]["name"]
    if device == "cuda":  # the measured GPU default (docs/quality.md), not the old resemblyzer / 2000 evaluations
        assert clone["scorer"]["name"] == GPU_DEFAULTS["scorer"] == "compose:ecapa+resemblyzer"
        assert clone["budget"]["evals"] == 768 and clone["batch_size"] == 16 and clone["score_seconds"] == 5.0
        assert notes == []
    else:
        assert clone["renderer"]["name"] == "kokoro-onnx" and clone["batch_size"] == CPU_BATCH
        assert clone["budget"] == {"steps": None, "evals": None, "seconds": CPU_SEARCH_SECONDS}
        assert clone["scorer"]["name"] == "resemblyzer" and clone["stock_langs"] == ["a", "b"]
        assert len(notes) == 1 and notes[0].startswith("CPU defaults:")  # one line for the batch, not one per target


@pytest.mark.parametrize("device", ["cpu", "cuda"], ids=["cpu", "gpu-config-level"])  # "cuda" would mark it GPU-only
def test_what_the_user_gives_a_batch_wins_as_on_the_clone_line(targets, tmp_path, monkeypatch, device):
    if device == "cuda":
        pretend_gpu(monkeypatch)
    given = ("--scorer", "ecapa", "--evals", "40", "--batch", "4", "--score-seconds", "0", "--all-voices",
             "--renderer", "kokoro")
    clone = clone_config(monkeypatch, targets / "ann.wav", tmp_path / "clone", device, *given)
    settings = Settings(strategies=["auto"], scorers=["ecapa"], evals=40, batch=4, score_seconds=0, all_voices=True,
                        renderer="kokoro", device=device)
    (job, _) = plan_jobs(targets, settings)
    assert defaulted(job["config"]) == defaulted(clone)
    assert job["config"]["scorer"]["name"] == "ecapa" and job["config"]["budget"]["evals"] == 40
    assert job["config"]["batch_size"] == 4 and "score_seconds" not in job["config"] and "stock_langs" not in job["config"]

    # a grid of scorers given by the user stays; the budget left unset is still the device's
    grid = plan_jobs(targets, Settings(strategies=["auto"], scorers=["resemblyzer", "hybrid"], device=device))
    assert [j["config"]["scorer"]["name"] for j in grid] == ["resemblyzer", "hybrid"] * 2
    assert [j["id"] for j in grid][:2] == ["ann--auto--resemblyzer", "ann--auto--hybrid"]
    assert all(j["config"]["budget"] == clone_budget(device) for j in grid)
    assert "score_seconds" in grid[0]["config"] and "score_seconds" not in grid[1]["config"]  # hybrid needs the words


def clone_budget(device: str) -> dict:
    return dict(GPU_DEFAULTS["budget"]) if device == "cuda" else {"steps": None, "evals": None, "seconds": CPU_SEARCH_SECONDS}


def test_a_manifest_rows_settings_win_over_the_device_defaults(tmp_path):
    folder = tmp_path / "cast"
    folder.mkdir()
    t = np.arange(16000) / 16000
    sf.write(folder / "a.wav", 0.3 * np.sin(2 * np.pi * 150 * t), 16000)
    manifest = folder / "cast.jsonl"
    manifest.write_text("\n".join(json.dumps(row) for row in [
        {"path": "a.wav", "text": TEXT, "name": "own", "scorer": "resemblyzer", "evals": 12, "batch": 3},
        {"path": "a.wav", "text": TEXT, "name": "unset"},
    ]) + "\n")
    own, unset = plan_jobs(manifest, Settings(strategies=["auto"], device="cuda"))
    assert (own["config"]["scorer"]["name"], own["config"]["budget"]["evals"], own["config"]["batch_size"]) == ("resemblyzer", 12, 3)
    assert (unset["config"]["scorer"]["name"], unset["config"]["budget"], unset["config"]["batch_size"]) == \
        (GPU_DEFAULTS["scorer"], GPU_DEFAULTS["budget"], GPU_DEFAULTS["batch_size"])


@pytest.mark.parametrize("device", ["cpu", "cuda"], ids=["cpu", "gpu-config-level"])  # "cuda" would mark it GPU-only
def test_the_app_takes_clones_defaults_on_the_device(targets, tmp_path, monkeypatch, device):
    pytest.importorskip("gradio", reason="needs voicesearch[app]")
    from voicesearch.app import Runner, build_app, page_defaults

    if device == "cuda":
        pretend_gpu(monkeypatch)
    clone = clone_config(monkeypatch, targets / "ann.wav", tmp_path / "clone", device)
    start = page_defaults(device)
    assert start["scorer"] == clone["scorer"]["name"] and start["batch"] == clone["batch_size"]
    assert start["evals"] == (clone["budget"]["evals"] if device == "cuda" else CPU_EVALS)  # a CPU clone has 7 min instead

    demo = build_app(tmp_path / "runs", device=device)  # the page's boxes start there
    boxes = {b.elem_id: b.value for b in demo.blocks.values() if getattr(b, "elem_id", None) in ("scorer", "evals", "batch")}
    assert boxes == {"scorer": start["scorer"], "evals": start["evals"], "batch": start["batch"]}

    runner = Runner(tmp_path / "runs", {"device": device, "voices": None, "renderer": None,
                                        "renderer_options": {"weights": "auto"}, "plugins": []})
    config = runner.new_config(str(targets / "ann.wav"), TEXT, "auto", "", start["evals"], start["batch"])
    assert config["scorer"]["name"] == clone["scorer"]["name"]  # an empty scorer: the device's default
    for key in ("score_seconds", "stock_langs", "batch_size", "report_live_audio"):
        assert config.get(key) == clone.get(key), key
    assert config["renderer"]["name"] == clone["renderer"]["name"]  # kokoro-onnx on a CPU, as clone
    chosen = runner.new_config(str(targets / "ann.wav"), TEXT, "auto", "hybrid", 10, 2)  # what the page sets wins
    assert (chosen["scorer"]["name"], chosen["budget"]["evals"], chosen["batch_size"]) == ("hybrid", 10, 2)
    assert "score_seconds" not in chosen
    assert not (tmp_path / "runs").exists()  # new_config writes nothing


def test_a_new_batch_planned_for_another_device_is_planned_again_for_its_workers(targets, tmp_path, monkeypatch):
    """`--device auto` plans for this machine; when the Ray workers turn out to be on the other kind (a cluster
    unlike the machine that starts the batch), the runs take the workers' device defaults before any starts."""
    pytest.importorskip("ray")
    import io

    from rich.console import Console

    import voicesearch.batch as batch

    monkeypatch.setattr(batch, "defaults_device", lambda device: "cuda")  # this machine "has a GPU"; the local Ray none
    fakes = str(Path(__file__).resolve().parent / "fakes.py")
    settings = Settings(strategies=["hill-climb"], scorers=["fake-spectrum"], renderer="fake", space="offset", steps=2,
                        plugins=[fakes])
    log = io.StringIO()
    outcome = batch.start(targets, settings, tmp_path / "B", workers=1, console=Console(file=log, width=300))
    plan = json.loads((tmp_path / "B" / "batch.json").read_text())
    assert outcome["counts"]["done"] == 2 and plan["defaults"]["device"] == "cpu"
    for job in plan["jobs"]:
        config = json.loads((tmp_path / "B" / job["run"] / "config.json").read_text())
        assert job["config"]["batch_size"] == config["batch_size"] == CPU_BATCH  # not the GPU's 16 it was planned with
        assert config["stock_langs"] == ["a", "b"] and config["report_live_audio"] is False
    assert log.getvalue().count("CPU defaults:") == 1, log.getvalue()
