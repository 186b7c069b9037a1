"""Reading target speech: any format soundfile/librosa read, any rate or channel count, checked."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from .errors import InputError
from .types import TargetSpeech

MIN_SECONDS = 1.0
DEFAULT_MAX_SECONDS = 600.0
SILENCE_RMS = 1e-4  # ~ -80 dBFS


def _decode(path: Path) -> tuple[np.ndarray, int]:
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return data.mean(axis=1), sr
    except Exception:
        pass
    try:  # formats libsndfile lacks (e.g. some mp3/m4a) via librosa's audioread fallback
        import warnings

        import librosa

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data, sr = librosa.load(str(path), sr=None, mono=True)
        return data.astype(np.float32), int(sr)
    except Exception as e:
        raise InputError(f"cannot read audio {path}: {type(e).__name__}; convert it to wav/flac/ogg/mp3") from None


def load_audio(path: str | os.PathLike, sample_rate: int, max_seconds: float = DEFAULT_MAX_SECONDS) -> torch.Tensor:
    """Mono float32 at `sample_rate`, validated: exists, decodes, ≥1 s, ≤ max_seconds, not silent."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"target audio {path} does not exist")
    if not path.is_file():
        raise InputError(f"target audio {path} is not a file")
    if path.stat().st_size == 0:
        raise InputError(f"target audio {path} is empty (0 bytes)")
    try:  # refuse huge files before decoding them
        info = sf.info(str(path))
        if info.frames / info.samplerate > max_seconds:
            raise InputError(f"target audio {path} is {info.frames / info.samplerate:.0f} s, over the {max_seconds:.0f} s cap; "
                             "trim it or raise --max-audio-seconds")
    except InputError:
        raise
    except Exception:
        pass
    wave, sr = _decode(path)
    seconds = len(wave) / sr if sr else 0.0
    if seconds > max_seconds:
        raise InputError(f"target audio {path} is {seconds:.0f} s, over the {max_seconds:.0f} s cap; trim it or raise --max-audio-seconds")
    if seconds < MIN_SECONDS:
        raise InputError(f"target audio {path} is {seconds:.2f} s long; give at least {MIN_SECONDS:.0f} s of speech (10–30 s is best)")
    if not np.isfinite(wave).all():
        raise InputError(f"target audio {path} contains NaN/inf samples; re-export it")
    if float(np.sqrt(np.mean(wave.astype(np.float64) ** 2))) < SILENCE_RMS:
        raise InputError(f"target audio {path} is silent; give a recording of the speaker")
    if sr != sample_rate:
        import soxr

        wave = soxr.resample(wave, sr, sample_rate, quality="HQ").astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(wave))


def read_transcript(audio_path: Path, text: str | None, text_file: str | os.PathLike | None) -> str:
    """The words spoken in a clip: --text, --text-file, or a .txt file beside the audio."""
    if text is not None and text.strip():
        return text.strip()
    candidate = Path(text_file) if text_file else audio_path.with_suffix(".txt")
    if text_file and not candidate.is_file():
        raise InputError(f"transcript file {candidate} does not exist")
    if candidate.is_file():
        try:
            content = candidate.read_text(encoding="utf-8").strip()
        except UnicodeDecodeError:
            raise InputError(f"transcript file {candidate} is not UTF-8 text") from None
        if not content:
            raise InputError(f"transcript file {candidate} is empty")
        return content
    raise InputError(f"no transcript for {audio_path}: pass --text '...' or --text-file, or put {audio_path.with_suffix('.txt').name} beside it")


def load_target(paths: list[str | os.PathLike], texts: list[str | None] | None = None, text_files: list[str | None] | None = None,
                sample_rate: int = 24000, max_seconds: float = DEFAULT_MAX_SECONDS) -> TargetSpeech:
    """Load and check every target clip; the first clip's transcript is required, the rest optional."""
    if not paths:
        raise InputError("give at least one target audio file")
    clips, transcripts = [], []
    for i, p in enumerate(paths):
        p = Path(p)
        clips.append(load_audio(p, sample_rate, max_seconds))
        text = texts[i] if texts and i < len(texts) else None
        text_file = text_files[i] if text_files and i < len(text_files) else None
        if i == 0:
            transcripts.append(read_transcript(p, text, text_file))
        else:
            try:
                transcripts.append(read_transcript(p, text, text_file))
            except InputError:
                transcripts.append("")
    return TargetSpeech(clips, transcripts, sample_rate)


def write_wav(path: str | os.PathLike, wave: torch.Tensor, sample_rate: int) -> Path:
    """Atomic 16-bit PCM wav."""
    import io

    from .voice import atomic_write_bytes

    buf = io.BytesIO()
    sf.write(buf, wave.detach().float().cpu().clamp(-1, 1).numpy(), sample_rate, format="WAV", subtype="PCM_16")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
