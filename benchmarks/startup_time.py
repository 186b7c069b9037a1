"""Where the seconds of `voicesearch clone` go outside the search (issue #13, goal 3).

Runs `voicesearch clone ARGS` in a fresh process as a user types it, with timers wrapped around the phases of the
real code path (no phase is re-implemented here), and writes one row per run:

    interpreter   process spawn -> first line of the child
    import_cli    `import voicesearch.cli` (what `voicesearch --help` pays)
    plugins       loading the named plug-ins through their entry points (session.check_names: strategy, scorer ...)
    transcript    transcribe.fill_transcript (reads CLIP.txt here)
    target_load   audio.load_target (decode, resample, checks)
    renderer      session.build_renderer (Kokoro build + weight load; int8 conversion cached in ~/.cache/voicesearch)
    stock         session.load_stock (stock voice packs)
    scorer        the scorer's constructor (every embedder's weights)
    space/strategy  their constructors (PCA basis ...)
    prepare       scorer.prepare(target): target embeddings
    search        Search._steps (ask/evaluate/tell + per-step callbacks: history, checkpoints, live report)
    favorite      Search._take_favorite (the strategy's answer, scored outside the budget)
    samples       RunRecorder.write_samples (best voice on the target and held-out texts)
    stock_scores  report_recorder.score_stock (baseline; reuses the strategy's opening ranking)
    report_page   report.build_report at the end (plots, HTML); report_live: its refreshes during the search
                  (inside `search`)
    end_other     the rest of Search._end (checkpoint, voice files)
    exit          child's last line -> process gone (interpreter teardown)

    python benchmarks/startup_time.py --label after --out benchmarks/results/startup_time_cpu.json -- \\
        /work/shared/data/devset/VCTK-p258_023.flac --device cpu --strategy gradient \\
        --scorer compose:ecapa+resemblyzer --score-seconds 5 --evals 30 --batch 4

The JSON keeps earlier rows (other labels) of the same file, so before/after figures sit side by side.
"""
from __future__ import annotations

import time

T_CHILD = time.time()  # first: the child's start, before any import

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
END_PHASES = ("samples", "stock_scores", "report_page")


def _child(out: Path, spawn: float, argv: list[str]) -> None:
    """Inside the timed process: wrap the phases, run the CLI, write the timings."""
    events: dict[str, float] = {"interpreter": T_CHILD - spawn}
    counts: dict[str, int] = {}

    def add(name: str, seconds: float) -> None:
        events[name] = events.get(name, 0.0) + seconds
        counts[name] = counts.get(name, 0) + 1

    def wrap(owner: Any, attr: str, name: str | Any) -> None:
        inner = getattr(owner, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                add(name(*args, **kwargs) if callable(name) else name, time.perf_counter() - t0)

        setattr(owner, attr, timed)

    t0 = time.perf_counter()
    import voicesearch.cli as cli
    add("import_cli", time.perf_counter() - t0)
    from voicesearch import loop, report, report_recorder, run, session, transcribe

    wrap(session, "check_names", "plugins")
    wrap(cli, "check_names", "plugins")
    wrap(transcribe, "fill_transcript", "transcript")
    wrap(session, "load_target", "target_load")
    wrap(session, "build_renderer", "renderer")
    wrap(session, "load_stock", "stock")
    construct = session._construct

    def constructed(cls: Any, kind: str, *args: Any, **kwargs: Any) -> Any:
        t1 = time.perf_counter()
        obj = construct(cls, kind, *args, **kwargs)
        add(kind, time.perf_counter() - t1)
        if kind == "scorer":
            wrap(obj, "prepare", "prepare")
        return obj

    session._construct = constructed
    wrap(loop.Search, "_steps", "search")
    wrap(loop.Search, "_take_favorite", "favorite")
    wrap(loop.Search, "_end", "end_total")
    wrap(run.RunRecorder, "write_samples", "samples")
    wrap(report_recorder, "score_stock", "stock_scores")
    wrap(report, "build_report", lambda *a, final=False, **k: "report_page" if final else "report_live")
    sys.argv = ["voicesearch", "clone", *argv]
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    if "end_total" in events:
        events["end_other"] = events.pop("end_total") - sum(events.get(k, 0.0) for k in END_PHASES)
    wall_in = time.time() - T_CHILD
    out.write_text(json.dumps({"code": code, "phases": {k: round(v, 3) for k, v in events.items()}, "calls": counts,
                               "child_s": round(wall_in, 3), "child_end": time.time()}))


def _help_wall(repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "voicesearch", "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/startup_time_cpu.json")
    ap.add_argument("--label", required=True, help="name of this row (e.g. before, after)")
    ap.add_argument("--note", default="", help="what this row's code is (a change, a commit)")
    ap.add_argument("--help-repeats", type=int, default=3)
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--spawn", type=float, help=argparse.SUPPRESS)
    ap.add_argument("clone_args", nargs="*", help="after --: the arguments of `voicesearch clone` (no --out)")
    args = ap.parse_args()
    if args.child:
        return _child(args.child, args.spawn, args.clone_args)
    import torch

    with tempfile.TemporaryDirectory(prefix="startup_time_") as tmp:
        timings, run_dir = Path(tmp) / "timings.json", Path(tmp) / "run"
        spawn = time.time()
        done = subprocess.run([sys.executable, __file__, "--label", args.label, "--child", str(timings),
                               "--spawn", str(spawn), "--", *args.clone_args, "--out", str(run_dir)],
                              capture_output=True, text=True)
        wall = time.time() - spawn
        if done.returncode or not timings.is_file():
            sys.exit(f"clone failed ({done.returncode}):\n{done.stderr[-3000:]}")
        child = json.loads(timings.read_text())
        final = (run_dir / "voice_final.pt").read_bytes() if (run_dir / "voice_final.pt").is_file() else b""
        history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    phases = child["phases"]
    phases["exit"] = round(spawn + wall - child["child_end"], 3)
    outside = wall - phases.get("search", 0.0)
    import hashlib

    row = {
        "label": args.label, "note": args.note, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(wall, 3), "search_s": phases.get("search"), "outside_search_s": round(outside, 3),
        "phases_s": phases, "calls": child["calls"], "help_wall_s": _help_wall(args.help_repeats),
        "best_score": history[-1]["best"], "evals": history[-1]["evals"],
        "voice_final_sha256": hashlib.sha256(final).hexdigest()[:16],
        "command": "voicesearch clone " + shlex.join(args.clone_args),
    }
    data: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    rows = [r for r in data.get("rows", []) if r["label"] != args.label] + [row]
    data = {
        "benchmark": "startup_time",
        "device": f"CPU only ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared/loaded box)",
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "command": "python benchmarks/startup_time.py --label LABEL -- " + shlex.join(args.clone_args),
        "what": "seconds of one `voicesearch clone` per phase, from timers wrapped around the real code path "
                "(benchmarks/startup_time.py docstring); wall_s: spawn to exit; outside_search_s = wall_s - search",
        "rows": rows,
        **({"findings": data["findings"]} if "findings" in data else {}),  # written by hand: kept across runs
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
