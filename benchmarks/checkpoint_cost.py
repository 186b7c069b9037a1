"""What exact resume costs: the per-step state snapshot, and replaying CMA-ES / Nevergrad from plain data.

The run recorder serialises the whole search state after every step (so a stop inside a step can save the last
whole one), and a resumed CMA-ES or Nevergrad strategy rebuilds its optimizer by replaying every ask and tell
(no pickles). This times both (CPU time of this process: the machine it was measured on is shared) on the real stock voices with a cheap stand-in renderer and scorer (a fixed random
projection; the costs measured here do not depend on them):

  snapshot_ms   median (and min) time of `voicesearch.run.step_state`, what the recorder does after every step
  write_ms      median time of `checkpoint_bytes` (serialising it with the space), what a checkpoint write adds
  load_s        median time of `load_checkpoint` (CMA-ES and Nevergrad replay their history) after `--steps` steps
  run_s         the search's own CPU time for those steps (cheap renders: mostly the strategy), for comparison

    python benchmarks/checkpoint_cost.py --out benchmarks/results/checkpoint_cost.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from voicesearch import registry  # noqa: E402
from voicesearch.loop import Budget, Search  # noqa: E402
from voicesearch.run import checkpoint_bytes, load_checkpoint, step_state  # noqa: E402
from voicesearch.scorer import Scorer  # noqa: E402
from voicesearch.stock import StockVoices, voices_folder_from_env  # noqa: E402
from voicesearch.types import AudioBatch, ScoreResult, TargetSpeech  # noqa: E402


class Projection:
    sample_rate, device = 24000, torch.device("cpu")

    def __init__(self):
        self.w = torch.randn(256, 64, generator=torch.Generator().manual_seed(0)) / 16

    def render(self, packs, text, *, speed=1.0, differentiable=False):
        wave = torch.tanh(packs[:, 20, :] @ self.w)
        return AudioBatch(wave, torch.full((packs.shape[0],), wave.shape[1]), self.sample_rate)


class Cosine(Scorer):
    def prepare(self, target):
        return target.clips[0] / target.clips[0].norm()

    def score(self, renders, state):
        wave = renders.audio(0).wave
        total = (wave / wave.norm(dim=1, keepdim=True)) @ state
        return ScoreResult(total=total, parts={"similarity": total})


CASES = [  # (strategy, options, space, batch)
    ("cma-es", {}, "pca", 16),
    ("cma-es", {}, "full", 16),
    ("nevergrad:NGOpt", {"budget": 100000}, "pca", 16),
    ("random-walk", {}, "full", 16),
    ("gradient", {}, "pca", 16),
]


def build(stock: StockVoices, name: str, options: dict, space: str, batch: int, steps: int, seed: int) -> Search:
    sp = registry.get("spaces", space)(stock)
    strategy = registry.get("strategies", name)(space=sp, stock=stock, rng=torch.Generator().manual_seed(seed),
                                                batch_size=batch, **options)
    target = TargetSpeech([Projection().render(stock.packs[:1], "x").wave[0]], ["x"], 24000)
    return Search(strategy, Cosine(), Projection(), target, Budget(steps=steps))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    folder = voices_folder_from_env()
    if folder is None:
        raise SystemExit("set VOICESEARCH_VOICES_DIR to the stock voices folder")
    stock = StockVoices.from_folder(folder)
    rows = []
    for name, options, space, batch in CASES:
        for steps in args.steps:
            search = build(stock, name, options, space, batch, steps, 0)
            t0 = time.process_time()
            search.run()
            run_s = time.process_time() - t0
            snap, write, load = [], [], []
            for _ in range(11):
                t0 = time.process_time()
                state = step_state(search)
                snap.append(time.process_time() - t0)
                t0 = time.process_time()
                data = checkpoint_bytes(search, state)
                write.append(time.process_time() - t0)
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / "checkpoint.pt"
                path.write_bytes(data)
                for _ in range(3):
                    fresh = build(stock, name, options, space, batch, steps, 1)
                    t0 = time.process_time()
                    load_checkpoint(fresh, path)
                    load.append(time.process_time() - t0)
            row = {"strategy": name, "space": space, "batch": batch, "steps": steps, "checkpoint_mb": round(len(data) / 2**20, 2),
                   "snapshot_ms": round(1000 * statistics.median(snap), 2),
                   "snapshot_min_ms": round(1000 * min(snap), 2), "write_ms": round(1000 * statistics.median(write), 1),
                   "load_s": round(statistics.median(load), 3), "run_s": round(run_s, 2)}
            print(row, flush=True)
            rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "what": "per-step state snapshot (checkpoint_bytes) and load_checkpoint (CMA-ES/Nevergrad replay their history)",
        "device": f"cpu ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; CPU times)", "torch": torch.__version__,
        "python": platform.python_version(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]), "stock_voices": len(stock), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
