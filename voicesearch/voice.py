"""Voice packs: Kokoro's (510, 1, 256) style tensors, loaded and saved safely.

Formats:
- `.pt`  — one tensor, as Kokoro ships them (read with `torch.load(weights_only=True)`: no pickled code runs);
- `.npz` — numpy archive of name -> (510, 1, 256) arrays (read with `allow_pickle=False`);
- `.bin` — kokoro-onnx's `voices.bin`, which is an `.npz` archive under another name.
A single style vector (256,) broadcasts to a whole pack.
"""
from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from .errors import InputError

PACK_ROWS = 510
STYLE_DIM = 256
PACK_SHAPE = (PACK_ROWS, 1, STYLE_DIM)
MAX_VOICE_FILE_BYTES = 64 * 2**20  # a stock pack is 522 KB; a voices.bin with 54 voices is ~28 MB


def as_pack(t: torch.Tensor | np.ndarray, where: str = "voice") -> torch.Tensor:
    """Validate and normalise to a float32 CPU tensor of shape (510, 1, 256).

    Accepts (510, 1, 256), (510, 256), (1, 256) or (256,) — a style vector is repeated on every row.
    """
    t = torch.as_tensor(np.asarray(t) if isinstance(t, np.ndarray) else t)
    if not torch.is_floating_point(t):
        raise InputError(f"{where}: expected float values, got dtype {t.dtype}")
    t = t.detach().to("cpu", torch.float32)
    if t.shape == PACK_SHAPE:
        pass
    elif t.shape == (PACK_ROWS, STYLE_DIM):
        t = t.unsqueeze(1)
    elif t.shape in ((STYLE_DIM,), (1, STYLE_DIM), (1, 1, STYLE_DIM)):
        t = t.reshape(1, 1, STYLE_DIM).expand(PACK_SHAPE).clone()
    else:
        raise InputError(
            f"{where}: shape {tuple(t.shape)} is not a Kokoro voice pack (expected (510, 1, 256) or a (256,) style)"
        )
    if not torch.isfinite(t).all():
        raise InputError(f"{where}: contains NaN or infinite values; re-export the voice from a finite tensor")
    return t.contiguous()


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"voice file {path} does not exist")
    if not path.is_file():
        raise InputError(f"voice path {path} is not a file")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"voice file {path} is empty")
    if size > MAX_VOICE_FILE_BYTES:
        raise InputError(f"voice file {path} is {size / 2**20:.0f} MiB, larger than any voice pack; check the path")


def check_zip_sizes(path: Path, what: str, max_bytes: int | None = None) -> None:
    """Refuse an archive whose members would expand past `max_bytes`, or far past its own size: a torch file is
    stored uncompressed, so a .pt that declares much more than it holds is a decompression bomb. Reads only the
    zip directory (and, for .npy members, their headers), never the data."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            declared = sum(m.file_size for m in members)
            if max_bytes is not None and declared > max_bytes:
                raise InputError(f"{what} {path} would expand to {declared / 2**20:.0f} MiB, larger than any voice; refused")
            if path.suffix.lower() in (".pt", ".pth") and declared > 2 * path.stat().st_size + 2**20:
                raise InputError(f"{what} {path} declares {declared / 2**20:.0f} MiB of compressed content; torch files are "
                                 "not compressed, so it was not written by torch.save and is refused")
            for m in members:
                if m.filename.endswith(".npy"):
                    _check_npy_member(archive, m, path, what)
    except zipfile.BadZipFile:
        raise InputError(f"{what} {path} is not a readable archive (a corrupt or truncated zip)") from None


def _check_npy_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, path: Path, what: str) -> None:
    """The shape an .npy header declares must fit in the bytes the member holds (numpy allocates it first)."""
    with archive.open(member) as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
        except Exception as e:
            raise InputError(f"{what} {path}: member {member.filename} is not a numpy array ({str(e)[:80]})") from None
    if dtype.hasobject:
        raise InputError(f"{what} {path}: {member.filename} holds Python objects (pickles), which are refused")
    needed = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if needed > member.file_size:
        raise InputError(f"{what} {path}: {member.filename} declares shape {tuple(shape)} but holds only "
                         f"{member.file_size} bytes; the file is corrupt")


def load_voices(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read every voice in a file: {name: (510, 1, 256)}. A `.pt` file holds one voice named by its stem."""
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        if not zipfile.is_zipfile(path):
            raise InputError(f"voice file {path} is not a torch tensor file (not the zip format torch.save writes)")
        check_zip_sizes(path, "voice file", MAX_VOICE_FILE_BYTES)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # weights_only refuses pickled code; torch says why in many lines
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(f"voice file {path} is not a plain tensor file ({first[:160]}); only tensor .pt files are accepted") from None
        if isinstance(obj, dict) and len(obj) == 1:
            obj = next(iter(obj.values()))
        if not isinstance(obj, torch.Tensor):
            raise InputError(f"voice file {path} holds a {type(obj).__name__}, not a tensor")
        return {path.stem: as_pack(obj, str(path))}
    if suffix in (".npz", ".bin"):
        if not zipfile.is_zipfile(path):
            raise InputError(f"voice file {path} is not a numpy archive (.npz / voices.bin are zip files)")
        check_zip_sizes(path, "voice file", MAX_VOICE_FILE_BYTES)
        try:
            with np.load(path, allow_pickle=False) as archive:
                voices = {name: as_pack(archive[name], f"{path}:{name}") for name in archive.files}
        except InputError:
            raise
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
            raise InputError(f"voice file {path} is not a readable numpy archive ({str(e)[:120]})") from None
        if not voices:
            raise InputError(f"voice file {path} holds no voices")
        return voices
    raise InputError(f"voice file {path}: unknown extension {suffix!r}; use .pt, .npz or voices .bin")


def load_voice(path: str | os.PathLike, name: str | None = None) -> torch.Tensor:
    """Read one voice. For multi-voice archives, `name` picks one (required when there are several)."""
    voices = load_voices(path)
    if name is None:
        if len(voices) == 1:
            return next(iter(voices.values()))
        raise InputError(f"{path} holds {len(voices)} voices; name one of: {', '.join(sorted(voices)[:10])}")
    if name not in voices:
        raise InputError(f"{path} has no voice {name!r}; it holds: {', '.join(sorted(voices)[:10])}")
    return voices[name]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write via a temp file in the same folder and rename, so readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_voice(pack: torch.Tensor, path: str | os.PathLike, name: str = "voice") -> Path:
    """Save one voice as `.pt` (a plain tensor), `.npz` or `voices.bin` ({name: pack}). Atomic."""
    path = Path(path)
    pack = as_pack(pack, "voice to save")
    buf = io.BytesIO()
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        torch.save(pack.clone(), buf)
    elif suffix in (".npz", ".bin"):
        np.savez(buf, **{name: pack.numpy()})
    else:
        raise InputError(f"cannot save a voice as {suffix!r}; use .pt, .npz or .bin")
    atomic_write_bytes(path, buf.getvalue())
    return path


def save_voices(voices: dict[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Save several voices into one `.npz` / kokoro-onnx `voices.bin` archive. Atomic."""
    buf = io.BytesIO()
    np.savez(buf, **{n: as_pack(v, n).numpy() for n, v in voices.items()})
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
