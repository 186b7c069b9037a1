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


MAX_TRANSCRIPT_CHARS = 1000  # ~1 minute of speech; every candidate speaks it at every step


def _wav_shortfall(path: Path) -> tuple[float, float] | None:
    """(seconds the header promises, seconds the file holds) when a RIFF WAV's data chunk is cut short."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    size = path.stat().st_size
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, block_align, rate = 12, 0, 0
    while pos + 8 <= len(head):
        chunk, length = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if chunk == b"fmt " and pos + 24 <= len(head):
            rate = int.from_bytes(head[pos + 12:pos + 16], "little")
            block_align = int.from_bytes(head[pos + 20:pos + 22], "little")
        if chunk == b"data":
            held = size - (pos + 8)
            if length in (0, 0xFFFFFFFF) or length <= held or not block_align or not rate:
                return None  # 0 / -1: a streamed header that never learnt its length
            return length / block_align / rate, held / block_align / rate
        pos += 8 + length + (length & 1)
    return None


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
    declared = None
    try:  # refuse huge files before decoding them
        info = sf.info(str(path))
        if info.frames > 0 and info.format in ("WAV", "WAVEX", "FLAC", "AIFF", "W64", "RF64", "CAF"):  # exact counts
            declared = info.frames / info.samplerate
        if info.frames / info.samplerate > max_seconds:
            raise InputError(f"target audio {path} is {info.frames / info.samplerate:.0f} s, over the {max_seconds:.0f} s cap; "
                             "trim it or raise --max-audio-seconds")
    except InputError:
        raise
    except Exception:
        pass
    short = _wav_shortfall(path)
    wave, sr = _decode(path)
    if short is None and declared is not None and sr and len(wave) / sr < declared - 0.01:
        short = (declared, len(wave) / sr)
    if short is not None:
        raise InputError(f"target audio {path} is truncated: its header promises {short[0]:.2f} s but the file holds "
                         f"{short[1]:.2f} s; re-export or copy it again")
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


def check_transcript(text: str, source: str) -> str:
    """A transcript Kokoro can speak: some letters or digits, at most MAX_TRANSCRIPT_CHARS characters."""
    text = text.strip()
    if not any(c.isalnum() for c in text):
        raise InputError(f"the transcript from {source} has no words ({text[:40]!r}); give the words spoken in the clip")
    if len(text) > MAX_TRANSCRIPT_CHARS:
        raise InputError(f"the transcript from {source} is {len(text)} characters; at most {MAX_TRANSCRIPT_CHARS} "
                         "(every candidate speaks it at every step): use a 10-30 s clip and its transcript")
    return text


def read_transcript(audio_path: Path, text: str | None, text_file: str | os.PathLike | None) -> str:
    """The words spoken in a clip: --text, --text-file, or a .txt file beside the audio."""
    if text is not None and text.strip():
        return check_transcript(text, "--text")
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
        return check_transcript(content, str(candidate))
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
