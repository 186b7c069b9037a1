"""The run report, built from a real (cheap) finished run: Search + RunRecorder + ReportRecorder on CPU.

The run is a demo-like clone with the sine-partial fake renderer: the target is a blend of two stock
voices that the search may not use, exactly as `voicesearch demo` does with Kokoro.
"""
from __future__ import annotations

import base64
import io
import json
import logging
import re
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.fakes import FakeRenderer, FakeSpectrumScorer, HillClimb
from voicesearch.demo import demo_target
from voicesearch.loop import Budget, Callback, Search
from voicesearch.renderer import Renders
from voicesearch.report import REPORT, STOCK_SCORES, TRAJECTORY, build_report
from voicesearch.report_recorder import ReportRecorder, append_trajectory, score_stock
from voicesearch.run import CONFIG, RunRecorder, read_history, write_json
from voicesearch.session import make_config
from voicesearch.space import OffsetSpace
from voicesearch.voice import load_voice

HIDDEN = {"voices": ["af_bella", "af_nicole"], "weights": [0.6, 0.4], "text": "hello there, this is the target speaking"}
HELD_OUT = "a sentence the search never heard"
STEPS, CHECKPOINT_EVERY = 12, 3


class Snapshot(Callback):
    """Keeps the page as it was at the first checkpoint, while the run was going."""

    def __init__(self, run_dir):
        self.run_dir, self.page = run_dir, None

    def on_step(self, search, x, result, improved):
        if self.page is None and (self.run_dir / REPORT).is_file():
            self.page = (self.run_dir / REPORT).read_text()


def _search(stock, renderer=None, steps=STEPS):
    searched = stock.without(*HIDDEN["voices"])
    renderer = renderer or FakeRenderer()
    strategy = HillClimb(OffsetSpace(searched), searched, torch.Generator().manual_seed(3), batch_size=6)
    return Search(strategy, FakeSpectrumScorer(), renderer, demo_target(renderer, stock, HIDDEN), Budget(steps=steps))


def _run(run_dir, stock, voices_dir, callbacks, renderer=None, steps=STEPS):
    config = make_config(target={"paths": [], "demo": HIDDEN}, voices=str(voices_dir), exclude_voices=HIDDEN["voices"],
                         strategy={"name": "hill-climb", "options": {}}, scorer={"name": "fake-spectrum", "options": {}},
                         space={"name": "offset", "options": {}}, renderer={"name": "fake", "options": {}},
                         budget={"steps": steps, "evals": None, "seconds": None}, batch_size=6,
                         checkpoint_every=CHECKPOINT_EVERY, sample_texts=[HELD_OUT])
    run_dir.mkdir(parents=True)
    write_json(run_dir / CONFIG, config)
    search = _search(stock, renderer, steps)
    search.callbacks += [RunRecorder(run_dir, CHECKPOINT_EVERY, [HELD_OUT]), *callbacks]
    search.run()
    return search


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, stock, voices_dir):
    run_dir = tmp_path_factory.mktemp("report") / "run"
    snapshot = Snapshot(run_dir)
    search = _run(run_dir, stock, voices_dir, [ReportRecorder(run_dir, CHECKPOINT_EVERY), snapshot])
    return SimpleNamespace(dir=run_dir, search=search, running_page=snapshot.page, stock=stock)


def _audio(page):
    """{role: [decoded waveform, ...]} of every embedded player."""
    out = {}
    for role, b64 in re.findall(r'<audio[^>]*data-role="([^"]+)"[^>]*src="data:audio/flac;base64,([^"]+)"', page):
        data, sr = sf.read(io.BytesIO(base64.b64decode(b64)), dtype="float32")
        out.setdefault(role, []).append((data, sr))
    return out


def test_finished_page_has_players_plots_and_settings(finished_run):
    page = (finished_run.dir / REPORT).read_text()
    assert "http-equiv=\"refresh\"" not in page and "finished" in page
    audio = _audio(page)
    assert set(audio) == {"target", "stock", "clone", "clone-heldout"}
    for role, clips in audio.items():
        for data, sr in clips:
            assert sr == FakeRenderer.sample_rate and len(data) > 0.1 * sr and np.abs(data).max() > 0.01, role
    # the embedded clone is the sample RunRecorder wrote, sample for sample (16-bit both ways)
    written, _ = sf.read(finished_run.dir / "samples" / "best_target_text.wav", dtype="float32")
    np.testing.assert_allclose(audio["clone"][0][0], written, atol=1e-4)
    target = finished_run.search.target.clips[0].numpy()
    np.testing.assert_allclose(audio["target"][0][0], target, atol=1e-4)
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)"', page)
    assert {alt for _, alt in images} >= {"score over evaluations and time", "parts of the score",
                                          "mel spectrograms of target and clone", "the clone among the stock voices (PCA map)"}
    for b64, alt in images:
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n", alt
    for text in ("hill-climb", "fake-spectrum", "fake sine renderer", "evaluations/s", "hidden target", "similarity",
                 "loudness", HELD_OUT, "Nearest stock voices"):
        assert text in page, text
    assert not re.search(r'(src|href)="(https?:)?//', page), "the page must not need the network"


def test_best_stock_voice_is_really_the_best_scoring_one(finished_run):
    search, data = finished_run.search, json.loads((finished_run.dir / STOCK_SCORES).read_text())
    stock = search.strategy.stock
    assert sorted(data["scores"]) == sorted(stock.names) and not set(HIDDEN["voices"]) & set(data["scores"])
    scores = search.scorer.score(Renders(search.renderer, stock.packs, search.texts), search.target_state).total
    assert data["best"] == stock.names[int(scores.argmax())]
    assert data["best_score"] == pytest.approx(float(scores.max()), abs=1e-5)
    page = (finished_run.dir / REPORT).read_text()
    assert f"best stock voice: {data['best']}" in page
    # the search beat its baseline, and the page says by how much
    best = read_history(finished_run.dir)[-1]["best"]
    assert best > data["best_score"] and f"{best - data['best_score']:+.4g}" in page


def test_stock_scores_the_strategy_already_has_are_reused(tmp_path, stock):
    search = _search(stock)
    search.target_state = search.scorer.prepare(search.target)
    names = search.strategy.stock.names
    known = torch.full((len(names),), -1.0)
    known[3], known[-5:] = 5.0, float("nan")  # as a strategy's opening leaves them when the budget ran out mid-ranking
    search.strategy.known_stock_scores = lambda: known
    calls = search.renderer.calls
    data = score_stock(search, tmp_path)
    assert (data["from_strategy"], data["scored_here"]) == (len(names) - 5, 5)
    assert search.renderer.calls - calls == 2, "one batch for the 5 unknown voices, one render of the best stock voice"
    assert data["best"] == names[3] and data["best_score"] == 5.0
    rest = search.strategy.stock.packs[-5:]
    expected = search.scorer.score(Renders(search.renderer, rest, search.texts), search.target_state).total
    assert [data["scores"][n] for n in names[-5:]] == pytest.approx(expected.tolist(), abs=1e-6)
    assert (tmp_path / "samples" / "stock_best_target_text.wav").is_file()


def test_trajectory_follows_the_best_voice(finished_run):
    rows = [json.loads(line) for line in (finished_run.dir / TRAJECTORY).read_text().splitlines()]
    assert rows and all(len(r["style"]) == 256 for r in rows)
    assert [r["step"] for r in rows] == sorted({r["step"] for r in rows})
    assert all(a["best"] <= b["best"] and a["best_step"] < b["best_step"] for a, b in zip(rows, rows[1:]))
    assert all(r["step"] % CHECKPOINT_EVERY == 0 for r in rows)
    best = load_voice(finished_run.dir / "voice_best.pt")[:, 0, :].mean(0).numpy()
    np.testing.assert_allclose(rows[-1]["style"], best, atol=1e-4)
    assert rows[-1]["best_step"] == read_history(finished_run.dir)[-1]["best_step"]


def test_page_while_running_reloads_and_plays_the_best_so_far(finished_run):
    page = finished_run.running_page
    assert page is not None and 'http-equiv="refresh"' in page and "running" in page
    assert "clone so far" in page and "clone" in _audio(page)
    assert not (finished_run.dir / "report_assets" / "best_so_far.wav").exists(), "removed when the final samples exist"


def test_report_rebuilds_from_the_run_directory_alone(finished_run, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from voicesearch.cli import app

    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run.dir, run_dir)
    (run_dir / REPORT).unlink()
    write_json(run_dir / "evaluate.json", {  # the shape `voicesearch evaluate --json` writes
        "voice": str(run_dir / "voice_final.pt"), "texts": [HELD_OUT], "judges": ["ecapa", "dnsmos"],
        "candidate": {"name": "voice", "scores": {"ecapa": 0.71, "dnsmos": 3.4}},
        "best_stock": {"name": "am_echo", "scores": {"ecapa": 0.52, "dnsmos": 3.5}}, "delta": {"ecapa": 0.19, "dnsmos": -0.1}})
    monkeypatch.delenv("VOICESEARCH_VOICES_DIR", raising=False)  # the map comes from report_assets/stock_styles.npz
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    page = (run_dir / REPORT).read_text()
    original = (finished_run.dir / REPORT).read_text()
    assert set(_audio(page)) == set(_audio(original))
    assert page.count("<img ") == original.count("<img ")
    assert "<th>ecapa</th><td>0.71</td><td>0.52</td><td>+0.1900</td>" in page and "best stock voice (am_echo)" in page


def test_report_of_a_run_with_no_steps_yet(tmp_path):
    write_json(tmp_path / CONFIG, make_config(target={"paths": ["/nowhere/me.wav"]}))
    page = build_report(tmp_path).read_text()
    assert "No step finished yet" in page and "<audio" not in page


def test_hook_never_stops_a_search(tmp_path, caplog):
    search = SimpleNamespace(progress=SimpleNamespace(best_pack=None))
    with caplog.at_level(logging.WARNING, logger="voicesearch.report"):
        ReportRecorder(tmp_path / "not-a-run").refresh(search, final=True)  # no config.json: nothing can be built
    assert "not refreshed" in caplog.text


def test_a_resume_drops_trajectory_rows_past_its_checkpoint(tmp_path):
    path = tmp_path / TRAJECTORY
    path.write_text("".join(json.dumps({"step": s, "best_step": s, "style": [0.0] * 256}) + "\n" for s in (3, 6, 9)))
    progress = SimpleNamespace(step=6, evals=36, elapsed=1.0, best_score=0.5, best_step=6, best_pack=torch.zeros(510, 256))
    assert append_trajectory(SimpleNamespace(progress=progress), tmp_path) == 6
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [3, 6]


class NoisyRenderer(FakeRenderer):
    """Draws from torch's global RNG when rendering, as Kokoro's vocoder does."""

    def render(self, packs, text, *, speed=1.0, differentiable=False):
        audio = super().render(packs, text, speed=speed)
        audio.wave = audio.wave + 0.01 * torch.randn(audio.wave.shape)
        return audio


def test_the_report_does_not_change_the_search(tmp_path, stock, voices_dir, monkeypatch):
    # only the renders and scoring of the hook can touch the search's RNG streams; skip drawing the page
    monkeypatch.setattr("voicesearch.report.build_report", lambda run_dir, **_: run_dir / REPORT)
    torch.manual_seed(0)
    _run(tmp_path / "with", stock, voices_dir, [ReportRecorder(tmp_path / "with", CHECKPOINT_EVERY)], NoisyRenderer(), steps=9)
    torch.manual_seed(0)
    _run(tmp_path / "without", stock, voices_dir, [], NoisyRenderer(), steps=9)
    same = [[r["batch_scores"] for r in read_history(tmp_path / d)] for d in ("with", "without")]
    assert same[0] == same[1]
    assert (tmp_path / "with" / STOCK_SCORES).is_file() and (tmp_path / "with" / TRAJECTORY).is_file()


def test_a_broken_file_costs_one_section_not_the_page(finished_run, tmp_path, caplog):
    run_dir = tmp_path / "broken"
    shutil.copytree(finished_run.dir, run_dir)
    (run_dir / "samples" / "best_heldout_0.wav").write_bytes(b"not audio")
    with caplog.at_level(logging.WARNING, logger="voicesearch.report"):
        page = build_report(run_dir).read_text()
    assert "players unavailable" in page and "<audio" not in page and "_players" in caplog.text
    assert 'alt="score over evaluations and time"' in page and 'alt="the clone among the stock voices (PCA map)"' in page
