"""The built-in demo target: speech the project makes itself, so a clone can run anywhere.

A hidden speaker is blended from stock voices; those voices are then left out of the search's
stock set, so the search must find the blend from the others — a real, checkable clone.

Sized for a 2-core CPU in a few minutes: one short sentence (~4 s of speech; render time grows with
the audio) and a stock set of the American and British female voices only (13 once the hidden two are
out), so CMA-ES searches 13 mixture weights rather than 52. It starts from the uniform mixture (the stock
mean) with a wide step, `DEMO_STRATEGY`: started at the best stock voice, the mixture space puts every
other voice's logit at log(1e-6), where a step of 0.3 never gives them weight and the search stalls.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .errors import InputError
from .stock import StockVoices, voices_folder_from_env
from .types import TargetSpeech

DEMO_TEXT = "The baker smiled and handed me a loaf of warm bread."
DEMO = {"voices": ["af_bella", "af_nicole"], "weights": [0.6, 0.4], "text": DEMO_TEXT}
DEMO_STOCK_PREFIXES = ("af_", "bf_")  # the voices the demo's search may use (minus the hidden ones)
DEMO_STRATEGY = {"name": "cma-es", "options": {"start": "mean", "sigma0": 2.0}}


def demo_exclude(names: list[str], spec: dict[str, Any] = DEMO) -> list[str]:
    """Stock voices the demo search leaves out: the hidden blend's voices and every voice outside DEMO_STOCK_PREFIXES."""
    hidden = list(spec["voices"])
    return hidden + [n for n in names if n not in hidden and not n.startswith(DEMO_STOCK_PREFIXES)]


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


def stock_names(voices: Path | None) -> list[str]:
    """Names of the stock voices a run with this voices setting will load (folder, $VOICESEARCH_VOICES_DIR, else the hub)."""
    folder = voices or voices_folder_from_env()
    if folder:
        return StockVoices.from_folder(folder).names
    from .kokoro.voices import resolve_stock_voices

    return resolve_stock_voices(None)[0].names
