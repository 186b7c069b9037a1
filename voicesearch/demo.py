"""The built-in demo target: speech the project makes itself, so a clone can run anywhere.

A hidden speaker is blended from stock voices; those voices are then left out of the search's
stock set, so the search must find the blend from the others — a real, checkable clone.
"""
from __future__ import annotations

from typing import Any

import torch

from .errors import InputError
from .stock import StockVoices
from .types import TargetSpeech

DEMO_TEXT = ("Every morning I walk along the river to the old bakery, where the bread is still warm "
             "and the owner always asks how my garden is doing.")
DEMO = {"voices": ["af_bella", "af_nicole"], "weights": [0.6, 0.4], "text": DEMO_TEXT}


def blend(stock: StockVoices, voices: list[str], weights: list[float]) -> torch.Tensor:
    w = torch.tensor(weights, dtype=torch.float32)
    return torch.einsum("n,nrd->rd", w / w.sum(), torch.stack([stock[v] for v in voices]))


def demo_target(renderer: Any, stock: StockVoices, spec: dict[str, Any] | bool) -> TargetSpeech:
    spec = DEMO if spec is True else spec
    missing = [v for v in spec["voices"] if v not in stock.names]
    if missing:
        raise InputError(f"demo needs stock voices {', '.join(missing)}, missing from the voices source; set --voices")
    pack = blend(stock, spec["voices"], spec["weights"])
    with torch.no_grad():
        audio = renderer.render(pack[None].to(renderer.device), spec["text"])
    return TargetSpeech([audio.item(0).float().cpu()], [spec["text"]], audio.sample_rate)
