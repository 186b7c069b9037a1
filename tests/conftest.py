"""Shared test settings: where the shared data lives (through env vars) and skip rules."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
_SHARED = REPO.parent / "shared" / "data"
for _name, _default in (("VOICESEARCH_VOICES_DIR", _SHARED / "kokoro-voices"), ("VOICESEARCH_TARGETS_DIR", _SHARED / "targets")):
    if not os.environ.get(_name):  # unset or empty (the Makefile exports an empty value when ../shared is absent)
        os.environ[_name] = str(_default)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

VOICES_DIR = Path(os.environ["VOICESEARCH_VOICES_DIR"])
TARGETS_DIR = Path(os.environ["VOICESEARCH_TARGETS_DIR"])


@pytest.fixture(scope="session")
def voices_dir() -> Path:
    if not VOICES_DIR.is_dir():
        pytest.skip(f"stock voices not found at {VOICES_DIR} (set VOICESEARCH_VOICES_DIR)")
    return VOICES_DIR


@pytest.fixture(scope="session")
def targets_dir() -> Path:
    if not (TARGETS_DIR / "kvoicewalk_example_target.wav").is_file():
        pytest.skip(f"example target not found in {TARGETS_DIR} (set VOICESEARCH_TARGETS_DIR)")
    return TARGETS_DIR


@pytest.fixture(scope="session")
def stock(voices_dir):
    from voicesearch.stock import StockVoices

    return StockVoices.from_folder(voices_dir)


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)
