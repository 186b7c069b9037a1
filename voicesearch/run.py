"""Run directories: everything needed to rerun, watch, pause and resume a search.

    RUN/config.json          every setting (rerun with `voicesearch resume RUN` or copy and edit)
    RUN/history.jsonl        one row per step
    RUN/checkpoint.pt        progress + strategy/scorer/space state + all RNG states (every N steps, on Ctrl-C, at the end)
    RUN/voice_best.pt|.npz   best scored voice so far;  RUN/voice_final.pt at the end: the search's answer (Progress.voice)
    RUN/samples/*.wav        the best voice speaking the target text and a held-out text
    RUN/.lock                while a process writes the run: its pid, locked (flock); the OS drops the lock if it dies
All writes are atomic (temp file + rename): a crash never leaves a half-written file behind. A checkpoint is
always of a step boundary, and loading one runs no code (docs/run-directory.md says what a run directory promises).
"""
from __future__ import annotations

import copy
import io
import json
import os
import random
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import InputError
from .loop import Callback, Search
from .types import ScoreResult
from .voice import atomic_write_bytes, check_zip_sizes, save_voice

CONFIG = "config.json"
HISTORY = "history.jsonl"
CHECKPOINT = "checkpoint.pt"
LOCK = ".lock"
CHECKPOINT_FORMAT = 2  # 2: optimizer state as plain data (format 1 held pickles)


def write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def read_config(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise InputError(f"{run_dir} is not a run directory (no {CONFIG})")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    except (UnicodeDecodeError, OSError) as e:
        raise InputError(f"{path} cannot be read ({type(e).__name__}); the run directory is damaged") from None
    from .session import validate_config

    return validate_config(config, str(path))


def read_history(run_dir: Path, skipped: list[int] | None = None) -> list[dict[str, Any]]:
    """The rows of history.jsonl; a line that is not a JSON object with a step (cut by a crash, edited) is skipped
    and its line number appended to `skipped`."""
    path = Path(run_dir) / HISTORY
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError
            rows.append(row)
        except ValueError:
            if skipped is not None and line.strip():
                skipped.append(number)
    return rows


def rng_states() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    if kind != "MT19937" or not isinstance(keys, torch.Tensor) or keys.numel() != 624:
        raise ValueError("numpy random state is not MT19937")
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def step_state(search: Search) -> dict[str, Any]:
    """What changes from step to step (progress, strategy, scorer, RNGs), copied: it stays as it is now.

    The space is left out: its tensors (a PCA basis is 27 MB) are fixed for the whole search; `checkpoint_bytes`
    adds them when the state is written."""
    return copy.deepcopy({
        "format": CHECKPOINT_FORMAT,
        "progress": search.progress.state_dict(),
        "strategy": search.strategy.state_dict(),
        "scorer": search.scorer.state_dict(),
        "rng": rng_states(),
    })


def checkpoint_bytes(search: Search, state: dict[str, Any] | None = None) -> bytes:
    """The whole state of a search at a step boundary (or `state` from `step_state`, with the space's),
    serialised: tensors, numbers, strings; no objects."""
    state = {**(state if state is not None else step_state(search)), "space": search.strategy.space.state_dict()}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def save_checkpoint(search: Search, path: Path) -> None:
    atomic_write_bytes(path, checkpoint_bytes(search))


_PROGRESS_KINDS = {"step": int, "evals": int, "elapsed": (int, float), "best_score": (int, float),
                   "best_x": (torch.Tensor, type(None)), "best_pack": (torch.Tensor, type(None)), "best_parts": dict,
                   "best_step": int, "favorite_pack": (torch.Tensor, type(None)), "favorite_score": (int, float, type(None))}


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's state: torch's weights-only loader (tensors and plain containers; no object is built,
    no code runs) after checking from the zip directory that it expands to no more than it holds."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path.parent} has no {path.name} to resume from")
    if not zipfile.is_zipfile(path):
        raise InputError(f"checkpoint {path} is not a torch checkpoint (not a zip); the run cannot resume from it")
    check_zip_sizes(path, "checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(f"checkpoint {path} is unreadable or holds more than plain data ({type(e).__name__}); "
                         "the run cannot resume from it") from None
    if not isinstance(state, dict) or not {"progress", "strategy", "scorer", "space", "rng"} <= set(state):
        raise InputError(f"checkpoint {path} is not a voicesearch checkpoint (missing parts)")
    progress = state["progress"]
    if not isinstance(progress, dict) or any(k not in _PROGRESS_KINDS or isinstance(v, bool) or not isinstance(v, _PROGRESS_KINDS[k])
                                             for k, v in progress.items()):
        raise InputError(f"checkpoint {path} has a malformed progress record")
    return state


def load_checkpoint(search: Search, path: Path) -> None:
    """Put a search back where its checkpoint was. Any mismatch with the rebuilt search is an InputError."""
    state = read_checkpoint(path)
    try:
        search.strategy.space.load_state_dict(state["space"])
        search.strategy.load_state_dict(state["strategy"])
        search.scorer.load_state_dict(state["scorer"])
        search.progress.load_state_dict(state["progress"])
        set_rng_states(state["rng"])
    except InputError as e:
        raise InputError(f"checkpoint {path}: {e}") from None
    except Exception as e:
        raise InputError(f"checkpoint {path} does not fit this run's config.json ({type(e).__name__}: "
                         f"{str(e).strip().splitlines()[0][:120] if str(e).strip() else ''}); the run cannot resume from it") from None


class RunLock:
    """An exclusive lock on a run directory (flock on RUN/.lock), held while one process writes the run.

    The operating system drops it when the process ends, however it ends (kill -9 included): no stale locks.
    """

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir)
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        path = self.dir / LOCK
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise InputError(f"cannot write in run directory {self.dir} ({e.strerror}); use a writable directory") from None
            try:
                _lock_fd(fd)
            except OSError:
                holder = os.read(fd, 32).decode(errors="replace").strip()
                os.close(fd)
                who = f" (pid {holder})" if holder.isdigit() else ""
                raise InputError(f"run directory {self.dir} is in use by another voicesearch process{who}; "
                                 "wait for it to finish or use another directory") from None
            try:  # the holder before us removes the file as it releases: ours must still be the one at the path
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            try:
                (self.dir / LOCK).unlink(missing_ok=True)  # a run directory at rest holds no lock file
            except OSError:
                pass
            os.close(self.fd)  # closing drops the lock
            self.fd = None


def _lock_fd(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _floats(t: torch.Tensor) -> list[float]:
    return [round(float(v), 6) for v in t.flatten()]


class RunRecorder(Callback):
    """Writes history, best voice, checkpoints and samples into a run directory.

    After every step it copies the search's state (in memory, `step_state`) and writes it as the checkpoint every
    `checkpoint_every` steps and whenever the search ends. A search that stops mid-step (a second Ctrl-C, out of
    memory, plug-in code exiting) thus leaves the checkpoint of the last whole step, never a state past `ask()`.
    `saved_step` is the step of the checkpoint on disk (None: this recorder wrote none).
    """

    def __init__(self, run_dir: Path, checkpoint_every: int = 10, sample_texts: list[str] | None = None,
                 on_checkpoint: list[Any] | None = None):
        self.dir = Path(run_dir)
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.sample_texts = sample_texts or []
        self.on_checkpoint = on_checkpoint or []  # hook(search, run_dir, final) at checkpoints and at the end
        self._last_best_save = 0.0
        self._best_dirty = False
        self.saved_step: int | None = None
        self._boundary: tuple[int, dict[str, Any]] | None = None  # (step, step_state) of the last whole step

    def on_start(self, search: Search) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        skipped: list[int] = []
        history = read_history(self.dir, skipped)
        kept = [r for r in history if r["step"] <= search.progress.step]
        if len(kept) != len(history) or skipped or not (self.dir / HISTORY).exists():  # a cut line is not appended to
            atomic_write_bytes(self.dir / HISTORY, "".join(json.dumps(r) + "\n" for r in kept).encode())
        if (self.dir / CHECKPOINT).is_file() and search.progress.step:
            self.saved_step = search.progress.step  # resumed from it

    def on_step(self, search: Search, x: torch.Tensor, result: ScoreResult, improved: bool) -> None:
        p = search.progress
        i = int(result.total.argmax())
        row = {
            "step": p.step, "evals": p.evals, "seconds": round(p.elapsed, 4), "time": time.time(),
            "best": p.best_score, "best_step": p.best_step, "best_parts": p.best_parts,
            "batch_best": float(result.total[i]), "batch_mean": float(result.total.float().mean()),
            "batch_scores": _floats(result.total),
            "batch_parts": {k: _floats(v) for k, v in result.parts.items()},
        }
        with open(self.dir / HISTORY, "a") as f:
            f.write(json.dumps(row) + "\n")
        self._boundary = (p.step, step_state(search))
        self._best_dirty |= improved
        if self._best_dirty and time.monotonic() - self._last_best_save > 2.0:
            self.save_best(search)
        if p.step % self.checkpoint_every == 0:
            self.checkpoint(search)

    def save_best(self, search: Search) -> None:
        pack = search.progress.best_pack
        if pack is None:
            return
        save_voice(pack, self.dir / "voice_best.pt")
        save_voice(pack, self.dir / "voice_best.npz", name="voice_best")
        self._last_best_save, self._best_dirty = time.monotonic(), False

    def _write_boundary(self, search: Search) -> None:
        if self._boundary is not None and self._boundary[0] != self.saved_step:
            atomic_write_bytes(self.dir / CHECKPOINT, checkpoint_bytes(search, self._boundary[1]))
            self.saved_step = self._boundary[0]

    def checkpoint(self, search: Search, final: bool = False) -> None:
        self.save_best(search)
        self._write_boundary(search)
        for hook in self.on_checkpoint:
            hook(search, self.dir, final)

    def on_end(self, search: Search, interrupted: bool) -> None:
        self._write_boundary(search)  # the last whole step, whatever stopped the search
        if self._boundary is None or search.progress.step != self._boundary[0]:
            return  # no whole step in this run, or progress past the checkpoint (stopped right after update)
        self.save_best(search)
        if getattr(search, "stop_reason", None) not in (None, "interrupt") or search.progress.best_pack is None:
            return  # stopped mid-step: no final voice, no samples (rendering may be what failed)
        if not interrupted:
            save_voice(search.progress.voice, self.dir / "voice_final.pt")
        self.write_samples(search)
        for hook in self.on_checkpoint:
            hook(search, self.dir, True)

    def write_samples(self, search: Search) -> None:
        from .audio import write_wav

        pack = search.progress.voice.to(search.renderer.device)[None]
        texts = {"target_text": search.target.text, **{f"heldout_{i}": t for i, t in enumerate(self.sample_texts)}}
        with torch.no_grad():
            for name, text in texts.items():
                if text:
                    audio = search.renderer.render(pack, text, speed=search.speed)
                    write_wav(self.dir / "samples" / f"best_{name}.wav", audio.item(0), audio.sample_rate)


class RunClaim:
    """A run directory this process is about to write: created if needed, then locked (`RunLock`).

    `fresh=True` (clone, demo): the directory must be empty; if the run then ends, however, before anything was
    checkpointed (bad input found late, a crash or Ctrl-C before the first step), it is removed again: a failed
    clone leaves no directory that blocks the same --out. The recorder tells whether a checkpoint was written.
    """

    def __init__(self, path: Path, fresh: bool):
        self.path, self.fresh = Path(path), fresh
        self.lock = RunLock(self.path)
        self.recorder: RunRecorder | None = None
        self._made: Path | None = None  # the top folder this claim created (None: it existed)

    def __enter__(self) -> "RunClaim":
        if self.fresh:
            missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except FileExistsError:
                raise InputError(f"output {self.path} exists and is not a directory; pick another --out") from None
            except OSError as e:
                raise InputError(f"cannot create run directory {self.path} ({e.strerror}); pick a writable --out") from None
            self._made = missing[-1] if missing else None
        elif not self.path.is_dir():
            raise InputError(f"{self.path} is not a run directory")
        self.lock.acquire()  # on failure the directory stays: the process holding the lock may have made it
        if self.fresh and any(p.name != LOCK for p in self.path.iterdir()):
            self.lock.release()
            raise InputError(f"output {self.path} already exists and is not empty; resume it with "
                             f"`voicesearch resume {self.path}` or pick another --out")
        return self

    @property
    def saved(self) -> bool:
        return self.recorder is not None and self.recorder.saved_step is not None

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.fresh and not self.saved:
                self.discard()
        finally:
            self.lock.release()

    def discard(self) -> None:
        """Remove what this claim put there (the directory was empty when claimed, so all of it is ours)."""
        import shutil

        if not self.path.is_dir():
            return
        for entry in self.path.iterdir():
            if entry.name != LOCK:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink(missing_ok=True)
        if self._made is not None:
            (self.path / LOCK).unlink(missing_ok=True)
            self._remove_made()

    def _remove_made(self) -> None:
        import shutil

        if self._made is not None and self._made.is_dir():
            shutil.rmtree(self._made, ignore_errors=True)
