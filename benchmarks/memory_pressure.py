"""Several clones sharing one GPU under memory pressure: none may crash; each finishes or stops resumably.

Phase 1 starts --clones `voicesearch clone` processes at once on the same GPU (optionally next to a "hog" that
holds --hog-gib GiB of GPU memory, steadily or pulsing), so renders and scorers run out of memory or cuFFT fails
to plan (CUFFT_INTERNAL_ERROR). What must happen (voicesearch/loop.py, voicesearch/kokoro/renderer.py): the
renderer halves its sub-batch and retries; at one voice per forward the loop frees memory, waits and retries the
population; if that fails too the clone stops with exit status 3, one line naming the checkpoint's step and the
`voicesearch resume` command. Phase 2 (the hog gone) resumes every clone that stopped, one after another.

Pass: no traceback anywhere, phase-1 statuses only 0 or 3, every phase-2 resume 0, every run ends with
voice_final.pt. The JSON (--results) has every clone's status, last stderr line, number of sub-batch halvings,
checkpoint step, and the device, versions, date and command; it is rewritten after each phase.

On the GPU box (no misaki there: phonemes from a table, see benchmarks/phoneme_table.py):

    VOICESEARCH_PHONEMES=benchmarks/results/recovery_phonemes.json python benchmarks/memory_pressure.py \\
        --target kvoicewalk_example_target.wav --clones 3 --hog-gib 100 --out /root/pressure \\
        --results benchmarks/results/memory_pressure.json -- \\
        --plugin benchmarks/phoneme_table.py --renderer kokoro-table --weights pypi-int8 --device cuda \\
        --strategy cma-es --scorer resemblyzer --batch 256 --evals 2048 --checkpoint-every 2

CPU smoke test with the test fakes (clone 1 is made to run out of memory from its 3rd population on):

    python benchmarks/memory_pressure.py --target me.wav --clones 3 --out /tmp/pressure --results /tmp/pressure.json \\
        --clone-env 1:FAULT_FAIL_FROM_CALL=3 -- --plugin tests/fakes.py --plugin tests/faults.py \\
        --renderer faulty-fake --scorer fake-spectrum --space offset --strategy cma-es --batch 4 --steps 8
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

HOG = """
import sys, time, torch
gib, period = float(sys.argv[1]), float(sys.argv[2])
def take():
    return torch.empty(int(gib * 2**30), dtype=torch.uint8, device="cuda").fill_(1)
held = take()
print("holding", flush=True)
while True:
    time.sleep(period or 3600)
    if period:  # pulse: let go for a moment, then take it back (transient pressure the clones may ride out)
        del held
        torch.cuda.empty_cache()
        time.sleep(period / 3)
        try:
            held = take()
        except torch.OutOfMemoryError:
            held = None
"""


def _tail(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _checkpoint_step(run: Path) -> int | None:
    from voicesearch.run import read_checkpoint

    try:
        return int(read_checkpoint(run / "checkpoint.pt")["progress"]["step"])
    except Exception:
        return None


def _record(run: Path, rc: int, err: str, seconds: float) -> dict[str, Any]:
    return {"exit": rc, "seconds": round(seconds, 1), "traceback": "Traceback" in err, "last_line": _tail(err),
            "halvings": err.count("sub-batches of"), "checkpoint_step": _checkpoint_step(run),
            "voice_final": (run / "voice_final.pt").is_file()}


def _device() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()})"
    except Exception as e:
        return f"unknown ({e})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="target clip (with its .txt transcript beside it, or pass --text after --)")
    parser.add_argument("--clones", type=int, default=3)
    parser.add_argument("--hog-gib", type=float, default=0.0, help="GPU memory a hog process holds during phase 1 (0: none)")
    parser.add_argument("--hog-period", type=float, default=0.0, help="pulse the hog: release every N s for N/3 s (0: steady)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the clones' run directories (must not exist)")
    parser.add_argument("--results", type=Path, required=True, help="JSON to write")
    parser.add_argument("--clone-env", action="append", default=[], help="I:KEY=VALUE environment for clone I (tests)")
    parser.add_argument("clone_args", nargs=argparse.REMAINDER, help="-- then the arguments every clone gets")
    args = parser.parse_args()
    clone_args = args.clone_args[1:] if args.clone_args[:1] == ["--"] else args.clone_args
    if args.out.exists():
        parser.error(f"--out {args.out} exists")
    args.out.mkdir(parents=True)
    import torch

    result: dict[str, Any] = {
        "what": "clones sharing one GPU under memory pressure: no crash; each finishes or stops with a resumable checkpoint",
        "device": _device(), "torch": torch.__version__, "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]), "clones": args.clones, "hog_gib": args.hog_gib,
        "hog_period": args.hog_period, "phase1": [], "phase2": [],
    }

    def save() -> None:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(result, indent=1) + "\n")

    hog = None
    if args.hog_gib > 0:
        hog = subprocess.Popen([sys.executable, "-c", HOG, str(args.hog_gib), str(args.hog_period)], stdout=subprocess.PIPE, text=True)
        if hog.stdout.readline().strip() != "holding":
            raise SystemExit("the hog could not take its memory; lower --hog-gib")
    extra_env: dict[int, dict[str, str]] = {}
    for item in args.clone_env:
        index, _, pair = item.partition(":")
        key, _, value = pair.partition("=")
        extra_env.setdefault(int(index), {})[key] = value
    runs = [args.out / f"clone{i}" for i in range(args.clones)]
    started = time.monotonic()
    procs = []
    for i, run in enumerate(runs):
        cmd = [sys.executable, "-m", "voicesearch", "clone", str(Path(args.target).resolve()), *clone_args, "--out", str(run.resolve()),
               "--seed", str(i)]
        env = dict(os.environ, COLUMNS="200", **extra_env.get(i, {}))
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env))
    for run, proc in zip(runs, procs):
        _, err = proc.communicate()
        result["phase1"].append({"run": str(run), **_record(run, proc.returncode, err, time.monotonic() - started)})
        save()
    if hog is not None:
        hog.kill()
        hog.wait()
    for run, first in zip(runs, result["phase1"]):
        if first["exit"] != 3:
            continue
        t0 = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "voicesearch", "resume", str(run), *_plugins(clone_args)],
                              capture_output=True, text=True, cwd=REPO, env=dict(os.environ, COLUMNS="200"))
        result["phase2"].append({"run": str(run), **_record(run, done.returncode, done.stderr, time.monotonic() - t0)})
        save()
    phase1_ok = all(r["exit"] in (0, 3) and not r["traceback"] for r in result["phase1"])
    stops_ok = all(re.search(r"checkpoint of step \d+ saved\. Continue with: voicesearch resume", r["last_line"])
                   for r in result["phase1"] if r["exit"] == 3 and r["checkpoint_step"])
    phase2_ok = all(r["exit"] == 0 and not r["traceback"] for r in result["phase2"])
    finished = all((run / "voice_final.pt").is_file() for run in runs)
    result["summary"] = {"phase1_statuses": [r["exit"] for r in result["phase1"]],
                         "stopped_resumably": sum(r["exit"] == 3 for r in result["phase1"]),
                         "halvings": sum(r["halvings"] for r in result["phase1"]),
                         "pass": phase1_ok and stops_ok and phase2_ok and finished}
    save()
    print(json.dumps(result["summary"]))
    return 0 if result["summary"]["pass"] else 1


def _plugins(clone_args: list[str]) -> list[str]:
    """The --plugin options of the clones: a resume loads plug-ins only when named again."""
    out = []
    for flag, value in zip(clone_args, clone_args[1:]):
        if flag == "--plugin":
            out += ["--plugin", value]
    return out


if __name__ == "__main__":
    sys.exit(main())
