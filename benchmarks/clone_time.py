"""Time to a finished default clone on a GPU, and the held-out quality it reached (issue #13, goal 3).

For each target: `voicesearch clone TARGET --device cuda --out RUN [--clone-args]` as a user types it, timed from
the command's start to its exit (imports, model load, target, search, samples, report), run twice in fresh
processes: the first (`cold`: nothing cached by this process tree yet) and the second (`warm`: the OS file cache and
any compile caches filled by the first). Then `voicesearch evaluate RUN --target TARGET --json` judges the warm
run's voice on the two held-out sentences of benchmarks/clone_quality.py against every English stock voice: floor,
ceiling (half vs half of the clip), closure, per judge, with the judge the run optimized marked. The history of the
warm run gives the time-to-quality curve of the objective (seconds from the first step, evaluations, best score).

    python benchmarks/clone_time.py --targets ../shared/data/devset/JFK_inaugural1961.flac \\
        --clone-args "--renderer kokoro-table --plugin benchmarks/phoneme_table.py --weights pypi-int8" \\
        --out benchmarks/results/clone_time.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    return time.perf_counter() - t0, done


def history(run: Path) -> list[dict[str, Any]]:
    rows = []
    for line in (run / "history.jsonl").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
    return rows


def renderer_args(extra: list[str]) -> list[str]:
    """The clone options `evaluate` needs too: --renderer, --plugin, --weights."""
    keep = []
    for i, a in enumerate(extra[:-1]):
        if a in ("--renderer", "--plugin", "--weights"):
            keep += [a, extra[i + 1]]
    return keep


def one_target(target: Path, extra: list[str], work: Path, judges: str, device: str,
               variant: list[str] | None = None) -> dict[str, Any]:
    """Cold and warm runs of the clone (or, with `variant`, one more warm run with those options added), then
    `evaluate` of the last run."""
    row: dict[str, Any] = {"target": target.name}
    for phase in (("variant",) if variant else ("cold", "warm")):
        run = work / f"{target.stem}-{phase}"
        cmd = [sys.executable, "-m", "voicesearch", "clone", str(target), "--device", device, "--out", str(run), *extra,
               *(variant or [])]
        wall, done = timed(cmd)
        if done.returncode != 0:
            raise SystemExit(f"{phase} clone failed ({done.returncode}): {done.stderr[-2000:]}")
        rows = history(run)
        row[f"{phase}_wall_s"] = round(wall, 2)
        row[f"{phase}_search_s"] = rows[-1].get("seconds")
        row[f"{phase}_evals"] = rows[-1].get("evals")
        row["command"] = " ".join(shlex.quote(c) for c in cmd[1:])
        row["resolved"] = {k: json.loads((run / "config.json").read_text()).get(k)
                           for k in ("strategy", "space", "scorer", "budget", "batch_size", "score_seconds")}
    row["curve"] = [{"search_s": r.get("seconds"), "evals": r.get("evals"), "best": r.get("best")} for r in rows]
    out = work / f"{run.name}-evaluate.json"
    judge = [sys.executable, "-m", "voicesearch", "evaluate", str(run), "--target", str(target), "--device", device,
             "--judge", judges, "--json", str(out), *renderer_args(extra)]
    wall, done = timed(judge)
    if done.returncode != 0:
        raise SystemExit(f"evaluate failed ({done.returncode}): {done.stderr[-2000:]}")
    row["evaluate_s"] = round(wall, 1)
    row["quality"] = json.loads(out.read_text()).get("closure")
    return row


def attempt(target: Path, *args: Any) -> dict[str, Any]:
    """`one_target`, or the failure's message: one failed target does not lose the others' figures."""
    try:
        return one_target(target, *args)
    except SystemExit as e:
        print(e, file=sys.stderr)
        return {"target": target.name, "error": str(e)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", nargs="+", type=Path, required=True, help="clips with their transcripts beside them")
    ap.add_argument("--clone-args", default="", help="extra `voicesearch clone` options (default: none, the defaults)")
    ap.add_argument("--judges", default="ecapa,resemblyzer,campplus,dnsmos")
    ap.add_argument("--device", default="cuda", help="cuda (the goal's device); cpu only to check this script")
    ap.add_argument("--variant", action="append", default=[], help="options added to the clone for one more warm run "
                    "per target, e.g. '--evals 1280' (repeatable); reported under `variants`")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    extra = shlex.split(args.clone_args)
    with tempfile.TemporaryDirectory(prefix="clone_time_") as tmp:
        rows = [attempt(t, extra, Path(tmp), args.judges, args.device) for t in args.targets]
        variants = [dict(attempt(t, extra, Path(tmp), args.judges, args.device, shlex.split(v)), options=v)
                    for v in args.variant for t in args.targets]
    report = {
        "benchmark": "clone_time", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor(),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "goal": "default clone on a GPU: <= 120 s wall on a first run, <= 60 s on a second (issue #13)",
        "cold_wall_s": max((r["cold_wall_s"] for r in rows if "cold_wall_s" in r), default=None),
        "warm_wall_s": max((r["warm_wall_s"] for r in rows if "warm_wall_s" in r), default=None),
        "rows": rows, "variants": variants,
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("cold_wall_s", "warm_wall_s")}))


if __name__ == "__main__":
    main()
