"""Kokoro renderer throughput: audio seconds rendered per wall second, and peak GPU memory, per batch size and precision.

    python benchmarks/render_throughput.py --device cuda --out benchmarks/results/render_throughput.json
    python benchmarks/render_throughput.py --write-phonemes /tmp/kvw.phonemes          # here, where misaki is installed
    python benchmarks/render_throughput.py --device cuda --phonemes-file /tmp/kvw.phonemes --out ...   # on a GPU box without misaki

The text is the KVoiceWalk example transcript ($VOICESEARCH_TARGETS_DIR/kvoicewalk_example_target.txt) unless --text
or --phonemes-file is given. Voices cycle through the stock voices. Each row: one warm-up render, then the median of
--repeats timed renders (torch.cuda.synchronize around each). `--find-max` keeps doubling the batch past the list
until the renderer has to split a batch after CUDA out-of-memory. `--profile` adds a timed run per row with
per-stage timers (text, predictor, decoder, source, generator) and prints the dominant stage.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

from voicesearch.kokoro.renderer import KokoroRenderer  # noqa: E402


def transcript(args) -> str:
    if args.text:
        return args.text
    folder = Path(args.targets_dir or os.environ.get("VOICESEARCH_TARGETS_DIR") or REPO.parent / "shared" / "data" / "targets")
    path = folder / "kvoicewalk_example_target.txt"
    if not path.is_file():
        sys.exit(f"no transcript at {path}: set VOICESEARCH_TARGETS_DIR, --targets-dir, --text or --phonemes-file")
    return path.read_text(encoding="utf-8").strip()


def phonemes(args) -> str:
    if args.phonemes_file:
        return Path(args.phonemes_file).read_text(encoding="utf-8").strip()
    from voicesearch.kokoro.g2p import phonemize  # needs misaki + spaCy

    return phonemize(transcript(args), args.lang)


_STOCK = []


def stock_packs(n: int) -> torch.Tensor:
    """n packs cycling through the stock voices (loaded once)."""
    if not _STOCK:
        from voicesearch.kokoro.voices import resolve_stock_voices

        voices, note = resolve_stock_voices(None)
        print(note)
        _STOCK.append(voices.packs)
    packs = _STOCK[0]
    return packs[torch.arange(n) % packs.shape[0]]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_row(renderer: KokoroRenderer, packs: torch.Tensor, ps: str, repeats: int) -> dict:
    device = renderer.device
    renderer.max_batch = packs.shape[0]
    retries_before = renderer.oom_retries
    sync(device)
    start = time.perf_counter()
    audio = renderer.render_phonemes(packs, ps)  # warm-up (and cuDNN/oneDNN algorithm choice, torch.compile)
    sync(device)
    warmup = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        audio = renderer.render_phonemes(packs, ps)
        sync(device)
        times.append(time.perf_counter() - start)
    seconds = float(audio.lengths.sum()) / audio.sample_rate
    median = statistics.median(times)
    return {
        "batch": packs.shape[0],
        "audio_seconds": round(seconds, 3),
        "median_s": round(median, 4),
        "times_s": [round(t, 4) for t in times],
        "audio_s_per_s": round(seconds / median, 3),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None,
        "oom_retries": renderer.oom_retries - retries_before,
        "warmup_s": round(warmup, 2),
    }


def profile_row(renderer: KokoroRenderer, packs: torch.Tensor, ps: str) -> dict[str, float]:
    renderer.profile(True)
    renderer.render_phonemes(packs, ps)
    stages, _ = renderer.stage_seconds, renderer.profile(False)
    return {k: round(v, 4) for k, v in sorted(stages.items(), key=lambda kv: -kv[1])}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--weights", default="auto")
    ap.add_argument("--batches", default="1,8,32,64,128,256")
    ap.add_argument("--precisions", default="fp32,bf16", help="comma-separated; add +compile for torch.compile, +bench for cuDNN's "
                    "autotuned convolutions (torch.backends.cudnn.benchmark), e.g. bf16+compile+bench")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--find-max", action="store_true", help="double the batch past the list until a CUDA OOM split happens")
    ap.add_argument("--time-budget", type=float, default=480.0, help="stop starting new rows after this many seconds")
    ap.add_argument("--text")
    ap.add_argument("--targets-dir")
    ap.add_argument("--phonemes-file", help="precomputed Kokoro phonemes (no misaki/spaCy needed)")
    ap.add_argument("--write-phonemes", help="write the transcript's phonemes to this file and exit")
    ap.add_argument("--lang", default="a")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    ps = phonemes(args)
    if args.write_phonemes:
        Path(args.write_phonemes).write_text(ps + "\n", encoding="utf-8")
        print(f"wrote {len(ps)} phoneme characters to {args.write_phonemes}")
        return {}

    batches = [int(b) for b in args.batches.split(",")]
    started = time.perf_counter()
    rows, notes = [], []
    weights_source = None
    for precision in args.precisions.split(","):
        # "bf16+compile": that precision with the generator under torch.compile (its compile time is reported apart)
        base, *levers = precision.split("+")
        torch.backends.cudnn.benchmark = "bench" in levers
        renderer = KokoroRenderer(device=args.device, weights=args.weights, precision=base,
                                  max_batch=max(batches), compile="compile" in levers)
        weights_source = renderer.weights_source
        todo = list(batches)
        while todo:
            b = todo.pop(0)
            if time.perf_counter() - started > args.time_budget:
                notes.append(f"{precision} batch {b}: skipped, time budget of {args.time_budget:.0f} s spent")
                continue
            packs = stock_packs(b)
            row = {"precision": precision, **time_row(renderer, packs, ps, args.repeats)}
            if args.profile:
                row["stage_s"] = profile_row(renderer, packs, ps)
                print(f"  {precision} B={b}: dominant stage {next(iter(row['stage_s']))} {row['stage_s']}")
            rows.append(row)
            print(json.dumps(row))
            if args.find_max and not todo and row["oom_retries"] == 0 and renderer.device.type == "cuda":
                todo.append(2 * b)
        del renderer
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()

    ratio: dict[str, dict[str, float]] = {}
    for precision in args.precisions.split(","):
        mine = {r["batch"]: r["audio_s_per_s"] for r in rows if r["precision"] == precision}
        if 1 in mine:
            ratio[precision] = {str(b): round(v / mine[1], 2) for b, v in mine.items()}
    fitting = {p: max((r["batch"] for r in rows if r["precision"] == p and r["oom_retries"] == 0), default=None)
               for p in args.precisions.split(",")}
    result = {
        "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "weights": weights_source,
        "phonemes": ps,
        "rows": rows,
        "batched_over_batch1": ratio,
        "largest_batch_without_split": fitting,
        "notes": notes,
    }
    print(json.dumps({k: result[k] for k in ("device", "batched_over_batch1", "largest_batch_without_split", "notes")}))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
