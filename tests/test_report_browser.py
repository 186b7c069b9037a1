"""The run report in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright.

Opens RUN/report.html from disk, checks every player loads and plays, every plot decodes, nothing
is fetched from the network, and saves a screenshot under test-artifacts/.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.test_report import finished_run  # noqa: F401  (the session-scoped run fixture)

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("VOICESEARCH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed: pip install playwright")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set VOICESEARCH_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def test_report_plays_and_renders_in_chromium(browser, finished_run):  # noqa: F811
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    fetched, errors = [], []
    page.on("request", lambda r: fetched.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto((finished_run.dir / "report.html").as_uri())

    durations = page.evaluate("""() => Promise.all([...document.querySelectorAll('audio')].map(a =>
        a.readyState >= 1 ? [a.dataset.role, a.duration] : new Promise(done => {
            a.addEventListener('loadedmetadata', () => done([a.dataset.role, a.duration]));
            a.addEventListener('error', () => done([a.dataset.role, -1]));
            a.load();
        })))""")
    assert {role for role, _ in durations} == {"target", "stock", "clone", "clone-heldout"}
    assert all(d > 0.1 for _, d in durations), durations

    # playable: the clock of a muted player moves (no audio device needed)
    played = page.evaluate("""async () => { const a = document.querySelector('audio[data-role=clone]');
        a.muted = true; await a.play(); await new Promise(r => setTimeout(r, 300)); a.pause(); return a.currentTime; }""")
    assert played > 0

    images = page.evaluate("() => [...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(images) >= 4
    assert all(complete and w > 200 and h > 100 for _, complete, w, h in images), images

    assert not fetched, f"the report fetched from the network: {fetched}"
    assert not errors, errors
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.close()
