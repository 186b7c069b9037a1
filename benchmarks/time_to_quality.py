"""Time to quality: wall time for each strategy to pass the seed's 0.917 Resemblyzer similarity on the example target.

KVoiceWalk reported Resemblyzer target similarity 0.709 (af_heart) -> 0.917 after 10,000 random-walk steps on its
example target (kvoicewalk_example_target.wav + .txt). Each strategy searches that target until any candidate's
Resemblyzer target similarity reaches --threshold, or its wall-time cap (--seconds-per-strategy) or --max-evals is
spent. Strategies (--strategies):

  seed          KVoiceWalk's way: random walk with batch 1 and the hybrid scorer on the seed's code paths (the
                resemblyzer package per candidate, librosa features, early exit), its stock-voice ranking included
  random-walk, interpolate-walk, cma-es, nevergrad, fd-adam, gradient, chain
                the settings of benchmarks/recovery.py, batched (--batch-size) with the hybrid scorer on its batched
                paths; runs that need gradients optimise the Resemblyzer similarity alone (the hybrid is not
                differentiable), as in recovery.py

Row: seconds (wall, from the first step; the target's preparation is `setup_s`) and evaluations when the threshold
was first passed (null if never), the highest similarity seen, the plateau (the first time the running highest came
within --plateau-tol of its final value) and the trace of every rise of the running highest
[wall_s, loop_s, evals, similarity]. Rows merge into --out by strategy, so strategies can run in separate commands.

    python benchmarks/loop_throughput.py --write-phonemes benchmarks/results/loop_phonemes.json   # here (misaki)
    python benchmarks/time_to_quality.py --device cuda --phonemes-file benchmarks/results/loop_phonemes.json \\
        --strategies seed,random-walk --seconds-per-strategy 240 --out benchmarks/results/time_to_quality.json
    python benchmarks/time_to_quality.py ... --strategies cma-es,chain      # same --out: the rows merge

CPU smoke test (a few minutes):

    python benchmarks/time_to_quality.py --device cpu --phonemes-file /tmp/smoke_phonemes.json --text "Hello there." \\
        --other-text "Good morning." --stock-prefix bf_ --strategies seed,random-walk --batch-size 2 \\
        --seconds-per-strategy 20 --out /tmp/ttq_smoke.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from loop_throughput import (REPO, add_common_args, batched_scorer, command_line, device_name, kokoro_of,  # noqa: E402
                             load_example, load_stock, make_renderer, seed_scorer, write_json, write_phonemes)
from recovery import EXAMPLE, RUNS, FirstPass, Run, describe, sync  # noqa: E402
from voicesearch import registry  # noqa: E402
from voicesearch.loop import Budget, Search, StopSearch  # noqa: E402

SEED = Run("random-walk", "full", note="KVoiceWalk: batch 1, resemblyzer package + librosa features, early exit, "
                                      "stock ranking one voice at a time, top-10 mean start")
LABELS = {"seed": SEED, **RUNS}


class Quality(FirstPass):
    """FirstPass with wall time, a trace of every rise of the highest similarity, and a wall-time cap."""

    def __init__(self, part: str, threshold: float, cap_s: float, stop_at_pass: bool):
        super().__init__(part, threshold)
        self.cap_s, self.stop_at_pass = cap_s, stop_at_pass
        self.wall: float | None = None
        self.trace: list[list[float]] = []
        self.capped = False
        self.started_at = self._start = 0.0

    def on_start(self, search: Search) -> None:
        self.started_at = self._start = time.perf_counter()

    def on_step(self, search: Search, x: torch.Tensor, result: Any, improved: bool) -> None:
        before = self.highest
        super().on_step(search, x, result, improved)
        wall = time.perf_counter() - self._start
        if self.highest > before:
            self.trace.append([round(wall, 2), round(search.progress.elapsed, 2), search.progress.evals, round(self.highest, 4)])
        if self.evals is not None and self.wall is None:
            self.wall = round(wall, 2)
            if self.stop_at_pass:
                raise StopSearch
        if wall >= self.cap_s:
            self.capped = True
            raise StopSearch

    def plateau(self, tol: float) -> list[float] | None:
        """The first trace point within `tol` of the final highest."""
        return next((t for t in self.trace if t[3] >= self.highest - tol), None)


def run_one(args: argparse.Namespace, label: str, renderer: Any, stock: Any, target: Any) -> dict[str, Any]:
    run = LABELS[label]
    batch = 1 if label == "seed" else args.batch_size
    space = registry.get("spaces", run.space)(stock, **run.space_options)
    options = dict(run.options)
    if run.strategy.startswith("nevergrad"):
        options["budget"] = args.max_evals
    strategy = registry.get("strategies", run.strategy)(space=space, stock=stock, rng=torch.Generator().manual_seed(args.seed),
                                                        batch_size=batch, **options)
    if strategy.may_want_grad():
        scorer, scorer_name, part = registry.get("scorers", "resemblyzer")(device=args.device), "resemblyzer (torch)", "similarity"
    elif label == "seed":
        scorer, scorer_name, part = seed_scorer(args), "hybrid (resemblyzer package, librosa features)", "target_similarity"
    else:
        scorer, scorer_name, part = batched_scorer(args), "hybrid (torch resemblyzer, torch features)", "target_similarity"
    quality = Quality(part, args.threshold, args.seconds_per_strategy, not args.continue_after_pass)
    search = Search(strategy, scorer, renderer, target, Budget(evals=args.max_evals), callbacks=[quality])
    sync(renderer.device)
    start = time.perf_counter()
    progress = search.run()
    sync(renderer.device)
    total = time.perf_counter() - start
    plateau = quality.plateau(args.plateau_tol)
    return {
        "strategy": label, "target": EXAMPLE, "batch": batch, "scorer": scorer_name, "setting": describe(run),
        "note": run.note, "threshold": args.threshold,
        "seconds_to_threshold": quality.wall, "evals_to_threshold": quality.evals,
        "loop_seconds_to_threshold": quality.seconds,
        "highest_similarity": round(quality.highest, 4),
        "best_voice_similarity": round(progress.best_parts.get(part, float("nan")), 4),
        "best_score": round(progress.best_score, 4),
        "plateau": None if plateau is None else {"seconds": plateau[0], "evals": plateau[2], "similarity": plateau[3],
                                                 "tolerance": args.plateau_tol},
        "stopped_by": "threshold" if quality.wall is not None and not args.continue_after_pass
                      else "wall-time cap" if quality.capped else "evals or strategy done",
        "seconds": round(total, 2), "setup_s": round(quality.started_at - start, 2),
        "evals": progress.evals, "steps": progress.step,
        "evals_per_s": round(progress.evals / max(search.progress.elapsed, 1e-9), 3),
        "trace": quality.trace,
    }


def merge(path: Path, rows: list[dict[str, Any]], header: dict[str, Any]) -> dict[str, Any]:
    """Merge rows into the report at `path` (a rerun of a strategy replaces its row)."""
    report: dict[str, Any] = {"rows": []}
    if path.is_file():
        report = json.loads(path.read_text(encoding="utf-8"))
    fresh = {r["strategy"] for r in rows}
    report["rows"] = [r for r in report.get("rows", []) if r["strategy"] not in fresh] + rows
    commands = report.get("commands", [])
    report.update(header)
    report["commands"] = commands + ([header["command"]] if header["command"] not in commands else [])
    write_json(path, report)
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--strategies", default="seed,random-walk,cma-es,chain", help=f"any of: {', '.join(LABELS)}")
    parser.add_argument("--batch-size", type=int, default=32, help="population of the batched strategies (the seed: 1)")
    parser.add_argument("--threshold", type=float, default=0.917, help="Resemblyzer target similarity to reach (the seed's)")
    parser.add_argument("--seconds-per-strategy", type=float, default=240.0, help="wall-time cap per strategy, from its first step (checked at step ends)")
    parser.add_argument("--max-evals", type=int, default=100_000, help="evaluation cap per strategy (nevergrad's budget)")
    parser.add_argument("--plateau-tol", type=float, default=0.005, help="'within this of the final highest' for the plateau")
    parser.add_argument("--continue-after-pass", action="store_true", help="keep searching to the cap after the threshold")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/time_to_quality.json")
    args = parser.parse_args(argv)
    if args.write_phonemes:
        return {"phonemes": write_phonemes(args)}
    labels = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in labels if s not in LABELS]
    if unknown:
        parser.error(f"unknown strategies {unknown}; choose from {', '.join(LABELS)}")

    renderer = make_renderer(args, args.batch_size)
    stock = load_stock(args, renderer)
    target = load_example(args, renderer)
    header = {"device": device_name(renderer.device), "torch": torch.__version__, "python": platform.python_version(),
              "weights": kokoro_of(renderer).weights_source, "precision": args.precision,
              "command": command_line("time_to_quality.py", argv), "stock_voices": len(stock),
              "texts": {"target": target.text, "other": args.other_text.strip()}}
    report: dict[str, Any] = {}
    for label in labels:
        header["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        row = run_one(args, label, renderer, stock, target)
        print(json.dumps({k: v for k, v in row.items() if k != "trace"}), flush=True)
        if args.out is not None:
            report = merge(args.out, [row], header)
        else:
            report.setdefault("rows", []).append(row)
    return report


if __name__ == "__main__":
    main()
