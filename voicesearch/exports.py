"""A found voice in the files other Kokoro front ends load (docs/exports.md; proven in tests/test_exports.py).

- kokoro (`KPipeline(...)(text, voice=path_or_tensor)`) and Kokoro-FastAPI: `NAME.pt`, one float32 (510, 1, 256) tensor;
- kokoro-onnx: `voices.bin`, a numpy `.npz` archive of NAME -> float32 (510, 1, 256);
- numpy: `NAME.npz`, the same layout.

Kokoro-FastAPI lists its voices folder by file stem, mixes voices on `+`/`-` in a name, and picks the G2P language from
the name's first letter, so a name for it looks like the stock ones: `af_me` (a = American English, f = female).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from .errors import InputError
from .voice import save_voice, save_voices

# Kokoro's language codes (kokoro.pipeline.LANG_CODES): the first letter of a Kokoro-FastAPI voice name
LANG_LETTERS = "abefhijpz"
_FASTAPI_NAME = re.compile(rf"^[{LANG_LETTERS}][a-z]?_[A-Za-z0-9_]+$")


def fastapi_name_problem(name: str) -> str | None:
    """Why Kokoro-FastAPI would misread `name` as a voice name, or None when it is fine."""
    if _FASTAPI_NAME.match(name):
        return None
    return (f"voice name {name!r} does not suit Kokoro-FastAPI: use letters, digits and _ only, starting with a language "
            f"letter ({', '.join(LANG_LETTERS)}) as the stock names do, e.g. af_{re.sub(r'[^A-Za-z0-9_]', '', name) or 'me'}")


def write_exports(pack: torch.Tensor, folder: str | Path, name: str) -> dict[str, Path]:
    """NAME.pt (kokoro, Kokoro-FastAPI), voices.bin (kokoro-onnx) and NAME.npz into `folder`; {kind: path}."""
    problem = fastapi_name_problem(name)
    if problem:
        raise InputError(problem)
    folder = Path(folder)
    return {
        "pt": save_voice(pack, folder / f"{name}.pt"),
        "bin": save_voices({name: pack}, folder / "voices.bin"),
        "npz": save_voice(pack, folder / f"{name}.npz", name=name),
    }
