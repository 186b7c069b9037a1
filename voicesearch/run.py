"""Run directories: everything needed to rerun, watch, pause and resume a search.

    RUN/config.json          every setting (rerun with `voicesearch resume RUN` or copy and edit)
    RUN/history.jsonl        one row per step
    RUN/checkpoint.pt        progress + strategy/scorer/space state + all RNG states (every N steps, on Ctrl-C, at the end)
    RUN/voice_best.pt|.npz   best voice so far;  RUN/voice_final.pt at the end
    RUN/samples/*.wav        the best voice speaking the target text and a held-out text
All writes are atomic (temp file + rename): a crash never leaves a half-written file behind.
"""
from __future__ import annotations

import io
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import InputError
from .loop import Callback, Search
from .types import ScoreResult
from .voice import atomic_write_bytes, save_voice

CONFIG = "config.json"
HISTORY = "history.jsonl"
CHECKPOINT = "checkpoint.pt"


def write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def read_config(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise InputError(f"{run_dir} is not a run directory (no {CONFIG})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / HISTORY
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by a crash: everything before it is good
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
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(search: Search, path: Path) -> None:
    state = {
        "progress": search.progress.state_dict(),
        "strategy": search.strategy.state_dict(),
        "scorer": search.scorer.state_dict(),
        "space": search.strategy.space.state_dict(),
        "rng": rng_states(),
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(search: Search, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(f"checkpoint {path} is unreadable ({type(e).__name__}); the run cannot resume from it") from None
    search.strategy.space.load_state_dict(state["space"])
    search.strategy.load_state_dict(state["strategy"])
    search.scorer.load_state_dict(state["scorer"])
    search.progress.load_state_dict(state["progress"])
    set_rng_states(state["rng"])


def _floats(t: torch.Tensor) -> list[float]:
    return [round(float(v), 6) for v in t.flatten()]


class RunRecorder(Callback):
    """Writes history, best voice, checkpoints and samples into a run directory."""

    def __init__(self, run_dir: Path, checkpoint_every: int = 10, sample_texts: list[str] | None = None,
                 on_checkpoint: list[Any] | None = None):
        self.dir = Path(run_dir)
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.sample_texts = sample_texts or []
        self.on_checkpoint = on_checkpoint or []  # e.g. the HTML report builder
        self._last_best_save = 0.0
        self._best_dirty = False

    def on_start(self, search: Search) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        history = read_history(self.dir)
        kept = [r for r in history if r["step"] <= search.progress.step]
        if len(kept) != len(history) or not (self.dir / HISTORY).exists():
            atomic_write_bytes(self.dir / HISTORY, "".join(json.dumps(r) + "\n" for r in kept).encode())

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

    def checkpoint(self, search: Search, final: bool = False) -> None:
        self.save_best(search)
        save_checkpoint(search, self.dir / CHECKPOINT)
        for hook in self.on_checkpoint:
            hook(search, self.dir, final)

    def on_end(self, search: Search, interrupted: bool) -> None:
        self.checkpoint(search)
        if search.progress.best_pack is None:
            return
        if not interrupted:
            save_voice(search.progress.best_pack, self.dir / "voice_final.pt")
        self.write_samples(search)
        for hook in self.on_checkpoint:
            hook(search, self.dir, True)

    def write_samples(self, search: Search) -> None:
        from .audio import write_wav

        pack = search.progress.best_pack.to(search.renderer.device)[None]
        texts = {"target_text": search.target.text, **{f"heldout_{i}": t for i, t in enumerate(self.sample_texts)}}
        with torch.no_grad():
            for name, text in texts.items():
                if text:
                    audio = search.renderer.render(pack, text, speed=search.speed)
                    write_wav(self.dir / "samples" / f"best_{name}.wav", audio.item(0), audio.sample_rate)
