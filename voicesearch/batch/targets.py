"""What a batch clones: targets read from a folder of clips or from a manifest (CSV, TSV, JSONL).

A folder: every audio file directly in it is one target (named after the file, transcript `CLIP.txt` beside it);
every subfolder holding audio is one target with all its clips (named after the subfolder; the first clip's
transcript is needed, the others' are optional).

A manifest: one target per row (CSV/TSV with a header line, or one JSON object per line) with

    path | paths     the clip, or several clips (`;`-separated in CSV/TSV, a list in JSONL); relative to the manifest
    text             transcript of the first clip (default: CLIP.txt beside it)
    name             the target's name, used for its run directory (default: the first clip's file name)
    and, optionally, per-target settings: strategy, scorer, space, steps, evals, seconds, seed, batch, exclude
    (`;`-separated voice names), strategy_opt, scorer_opt, space_opt (`key=value;key=value` or a JSON object).

Everything is checked here, before the batch writes a file: one InputError naming the row and what to do.
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..audio import read_transcript
from ..errors import InputError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus", ".aiff", ".aif")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl")
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
OPTION_COLUMNS = ("strategy", "scorer", "space", "steps", "evals", "seconds", "seed", "batch", "exclude",
                  "strategy_opt", "scorer_opt", "space_opt")
COLUMNS = ("path", "paths", "text", "name", *OPTION_COLUMNS)


@dataclass
class Target:
    """One speaker to clone: clips (absolute paths), the first clip's transcript if given, per-target settings."""

    name: str
    paths: list[str]
    text: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


def slug(text: str) -> str:
    """A file-name-safe version of `text` (letters, digits, `.`, `_`, `-`)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return s[:100] or "target"


def read_targets(source: Path) -> list[Target]:
    """The targets of a folder or manifest, checked: files exist, transcripts are there, names are unique."""
    source = Path(source)
    if not source.exists():
        raise InputError(f"targets {source} do not exist; give a folder of clips or a .csv/.tsv/.jsonl manifest")
    if source.is_dir():
        targets = _from_folder(source)
    elif source.suffix.lower() in MANIFEST_SUFFIXES:
        targets = _from_manifest(source)
    else:
        raise InputError(f"targets {source}: give a folder of clips or a manifest ending in {', '.join(MANIFEST_SUFFIXES)}")
    if not targets:
        raise InputError(f"targets {source} hold no target; put clips ({', '.join(AUDIO_SUFFIXES[:4])}, ...) with "
                         "CLIP.txt transcripts in it")
    seen: dict[str, int] = {}
    for t in targets:
        key = t.name.lower()  # run directories must not collide on case-insensitive file systems either
        if key in seen:
            raise InputError(f"targets {source}: the name {t.name!r} is used twice; names must be unique")
        seen[key] = 1
    return targets


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
                  and not p.name.startswith("."))


def _from_folder(folder: Path) -> list[Target]:
    targets, used = [], set()

    def unique(base: str) -> str:
        name, i = slug(base), 2
        while name.lower() in used:
            name, i = f"{slug(base)}-{i}", i + 1
        used.add(name.lower())
        return name

    for clip in _audio_files(folder):
        _check_clip(clip, f"targets folder {folder}")
        read_transcript(clip, None, None)  # InputError naming the clip when CLIP.txt is missing or empty
        targets.append(Target(unique(clip.stem), [str(clip.resolve())]))
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        clips = _audio_files(sub)
        if clips:
            for clip in clips:
                _check_clip(clip, f"targets folder {sub}")
            read_transcript(clips[0], None, None)
            targets.append(Target(unique(sub.name), [str(c.resolve()) for c in clips]))
    return targets


def _check_clip(path: Path, where: str) -> None:
    if not path.exists():
        raise InputError(f"{where}: clip {path} does not exist")
    if not path.is_file():
        raise InputError(f"{where}: clip {path} is not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{where}: clip {path} is empty (0 bytes)")


def _from_manifest(path: Path) -> list[Target]:
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise InputError(f"manifest {path} is over {MAX_MANIFEST_BYTES // 2**20} MiB; split it")
    try:
        content = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"manifest {path} is not UTF-8 text") from None
    rows: list[tuple[int, dict[str, Any]]] = []
    if path.suffix.lower() == ".jsonl":
        for number, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"manifest {path} line {number} is not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"manifest {path} line {number} must be a JSON object like "
                                 '{"path": "a.wav", "text": "...", "name": "a"}')
            rows.append((number, row))
    else:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        try:
            reader = csv.DictReader(io.StringIO(content), delimiter=delimiter)
            header = reader.fieldnames or []
            for number, row in enumerate(reader, 2):
                if None in row:
                    raise InputError(f"manifest {path} line {number} has more fields than the header")
                rows.append((number, {k.strip(): v for k, v in row.items() if v is not None and str(v).strip() != ""}))
        except csv.Error as e:
            raise InputError(f"manifest {path} is not valid {'TSV' if delimiter == chr(9) else 'CSV'} ({e})") from None
        if not any(h and h.strip() in ("path", "paths") for h in header):
            raise InputError(f"manifest {path} needs a header line with a path (or paths) column; "
                             f"columns it may have: {', '.join(COLUMNS)}")
    return [_target(path, number, row) for number, row in rows]


def _target(manifest: Path, number: int, row: dict[str, Any]) -> Target:
    where = f"manifest {manifest} line {number}"
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        raise InputError(f"{where}: unknown column(s) {', '.join(map(repr, unknown))}; known: {', '.join(COLUMNS)}")
    if ("path" in row) == ("paths" in row):
        raise InputError(f"{where}: give either path or paths")
    raw = row.get("path", row.get("paths"))
    if isinstance(raw, str):
        raw = [p.strip() for p in raw.split(";") if p.strip()]
    if not isinstance(raw, list) or not raw or not all(isinstance(p, str) and p for p in raw):
        raise InputError(f"{where}: path(s) must be a file name or a list of file names")
    paths = [(manifest.parent / p).resolve() if not Path(p).is_absolute() else Path(p) for p in raw]
    for p in paths:
        _check_clip(p, where)
    text = row.get("text")
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise InputError(f"{where}: text must be the words spoken in the first clip")
    read_transcript(paths[0], text, None)
    name = row.get("name")
    if name is None:
        name = slug(paths[0].stem)
    elif not isinstance(name, str) or not NAME_RE.match(name):
        raise InputError(f"{where}: name {name!r} must be 1-100 letters, digits, '.', '_' or '-' (it names a folder), "
                         "starting with a letter or digit")
    return Target(name, [str(p) for p in paths], text.strip() if text else None, _options(where, row))


def _options(where: str, row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("strategy", "scorer", "space"):
        if key in row:
            if not isinstance(row[key], str) or not row[key].strip():
                raise InputError(f"{where}: {key} must be a name")
            out[key] = row[key].strip()
    for key in ("steps", "evals", "seed"):
        if key in row:
            out[key] = _int(where, key, row[key], minimum=0 if key == "seed" else 1)
    if "seconds" in row:
        try:
            seconds = float(row["seconds"])
        except (TypeError, ValueError):
            seconds = -1.0
        if not (0 < seconds < float("inf")):
            raise InputError(f"{where}: seconds must be a positive number (got {row['seconds']!r})")
        out["seconds"] = seconds
    if "batch" in row:
        out["batch"] = "auto" if str(row["batch"]).strip() == "auto" else _int(where, "batch", row["batch"], 1, 4096)
    if "exclude" in row:
        value = row["exclude"]
        names = value if isinstance(value, list) else [v.strip() for v in str(value).split(";") if v.strip()]
        if not all(isinstance(n, str) for n in names):
            raise InputError(f"{where}: exclude must be voice names separated by ';'")
        out["exclude"] = names
    for key in ("strategy_opt", "scorer_opt", "space_opt"):
        if key in row:
            out[key] = _key_values(where, key, row[key])
    return out


def _int(where: str, key: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or number < minimum or (maximum is not None and number > maximum):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
        raise InputError(f"{where}: {key} must be an integer {bound} (got {value!r})")
    return number


def _key_values(where: str, key: str, value: Any) -> dict[str, Any]:
    from ..session import parse_options

    if isinstance(value, dict):
        return {str(k).replace("-", "_"): v for k, v in value.items()}
    if not isinstance(value, str):
        raise InputError(f"{where}: {key} must be key=value pairs separated by ';'")
    try:
        return parse_options([p for p in value.split(";") if p.strip()])
    except InputError as e:
        raise InputError(f"{where}: {key}: {e}") from None
