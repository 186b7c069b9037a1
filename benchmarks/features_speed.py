"""Speed of the batched torch feature extractor (`scorers.features.TorchFeatures`), the hybrid scorer's feature part.

The batch: KVoiceWalk's example target (24 kHz speech), tiled, cut into --batch clips of about --seconds each
(clip i starts i x 1.37 s further into the tiled speech and is up to 6 % shorter than --seconds, so the batch is
padded as a population's renders are). One untimed warm-up call (fills the per-tuning filter caches, as the
search's first step does), then --repeats timed calls (torch.cuda.synchronize after each on CUDA): median_s and
clips_per_s. One more call under torch.profiler gives the top ops by self time (device time on CUDA) and the
feature groups' totals (the "features:..." ranges).

Checks: the batch's features go into the JSON; --compare EARLIER.json checks them against an earlier run's (same
batch) within the parity bounds tests/test_scorer_features.py asserts against librosa, --reference against
librosa itself (slow, per clip), --baseline REV|FILE against scorers/features.py as it was at a git revision (or
a copy of it), whose calls are also timed, interleaved with the working tree's (a busy shared CPU then slows both
alike). The run exits 1 when a feature is outside the bounds.

    python benchmarks/features_speed.py --device cpu --threads 2 --batch 16 --out benchmarks/results/features_speed_cpu.json
    python benchmarks/features_speed.py --device cpu --threads 1 --batch 16 --baseline d3eb66d --out /tmp/ab.json
    python benchmarks/features_speed.py --device cuda --batch 16 --compare benchmarks/results/features_speed_cpu_after.json \
        --out /tmp/parity_cuda.json                                    # CUDA features vs the CPU run's
    python benchmarks/features_speed.py --device cuda --batch 128 --baseline features_before.py \
        --out benchmarks/results/features_speed_cuda.json              # (git show REV:scorers/features.py > features_before.py)
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
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]

from scorers.features import FEATURE_NAMES, SAMPLE_RATE, TorchFeatures, features_librosa  # noqa: E402
from voicesearch.types import AudioBatch  # noqa: E402

# The bounds tests/test_scorer_features.py asserts against librosa: 0.1 % relative, except these.
LOOSE_RELATIVE = {"spectral_contrast_mean": 2e-2, "spectral_contrast_std": 2e-2}
ABSOLUTE = {"tonnetz_mean": 2e-4, "tonnetz_std": 2e-4, "audio_mean": 1e-7}
STRIDE_S = 1.37


def build_batch(batch: int, seconds: float, targets_dir: Path) -> AudioBatch:
    import soundfile as sf

    from voicesearch.resample import resample

    path = targets_dir / "kvoicewalk_example_target.wav"
    if not path.is_file():
        sys.exit(f"no example target at {path}: set VOICESEARCH_TARGETS_DIR or --targets-dir")
    wave, sr = sf.read(path, dtype="float32", always_2d=True)
    speech = resample(torch.from_numpy(wave.mean(1)), sr, SAMPLE_RATE)
    n = int(seconds * SAMPLE_RATE)
    need = int((batch - 1) * STRIDE_S * SAMPLE_RATE) + n
    speech = speech.repeat(-(-need // speech.shape[0]))
    clips = []
    for i in range(batch):
        start = int(i * STRIDE_S * SAMPLE_RATE)
        length = n - int(0.06 * n * ((i * 7) % batch) / max(batch - 1, 1))
        clips.append(speech[start : start + length].contiguous())
    return AudioBatch.from_list(clips, SAMPLE_RATE)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_extract(extractors: dict[str, torch.nn.Module], audio: AudioBatch, device: torch.device,
                 repeats: int) -> dict[str, dict[str, Any]]:
    """Per extractor: wall and process-CPU seconds of each call (calls interleaved, so a busy shared machine slows
    all alike; CPU seconds, the work done by all threads, barely depend on how busy it is) and its features."""
    out: dict[str, dict[str, Any]] = {}
    with torch.no_grad():
        for name, extractor in extractors.items():
            out[name] = {"wall": [], "cpu": [], "features": extractor(audio).cpu()}  # warm-up
        sync(device)
        for _ in range(repeats):
            for name, extractor in extractors.items():
                wall, cpu = time.perf_counter(), time.process_time()
                extractor(audio)
                sync(device)
                out[name]["wall"].append(time.perf_counter() - wall)
                out[name]["cpu"].append(time.process_time() - cpu)
    return out


def summary(timing: dict[str, Any], batch: int) -> dict[str, Any]:
    median = statistics.median(timing["wall"])
    return {"times_s": [round(t, 4) for t in timing["wall"]], "median_s": round(median, 4), "clips_per_s": round(batch / median, 2),
            "process_cpu_s": [round(t, 4) for t in timing["cpu"]], "median_process_cpu_s": round(statistics.median(timing["cpu"]), 4)}


def baseline_extractor(rev: str) -> torch.nn.Module:
    """TorchFeatures from a copy of scorers/features.py (a file path) or as it was at git revision `rev`."""
    import importlib.util
    import subprocess
    import tempfile

    path = Path(rev)
    if not path.is_file():
        source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:scorers/features.py"], check=True,
                                capture_output=True, text=True).stdout
        path = Path(tempfile.mkdtemp()) / "features_baseline.py"
        path.write_text(source)
    spec = importlib.util.spec_from_file_location("features_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TorchFeatures()


def profile(extractor: TorchFeatures, audio: AudioBatch, device: torch.device, top: int) -> list[dict[str, Any]]:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.no_grad(), torch_profile(activities=activities) as prof:
        extractor(audio)
        sync(device)
    on_device = device.type == "cuda"
    sort = "self_cuda_time_total" if on_device else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=top))
    rows = []
    for e in prof.key_averages():
        row = {"op": e.key, "calls": e.count, "self_cpu_s": e.self_cpu_time_total / 1e6, "cpu_total_s": e.cpu_time_total / 1e6}
        if on_device:
            row["self_device_s"] = getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0)) / 1e6
        rows.append(row)
    key = "self_device_s" if on_device else "self_cpu_s"
    # The feature groups are record_function ranges ("features:..."): keep them beside the top ops.
    ops = sorted((r for r in rows if not r["op"].startswith("features:")), key=lambda r: -r[key])[:top]
    groups = sorted((r for r in rows if r["op"].startswith("features:")), key=lambda r: r["op"])
    return [{k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()} for r in ops + groups]


def deviation(got: torch.Tensor, ref: torch.Tensor) -> dict[str, Any]:
    """Worst deviation per feature of `got` from `ref` (both (B, 106)) and whether each is inside the parity bounds."""
    per, outside = {}, []
    for j, name in enumerate(FEATURE_NAMES):
        g, r = got[:, j], ref[:, j]
        abs_dev = float((g - r).abs().max())
        rel_dev = float(((g - r).abs() / r.abs().clamp_min(1e-300)).max())
        if name in ABSOLUTE:
            ok = abs_dev <= ABSOLUTE[name]
        else:
            ok = bool(((g - r).abs() <= LOOSE_RELATIVE.get(name, 1e-3) * r.abs() + 1e-9).all())
        per[name] = {"max_abs": abs_dev, "max_rel": rel_dev}
        if not ok:
            outside.append(name)
    worst = max((n for n in FEATURE_NAMES if n not in ABSOLUTE), key=lambda n: per[n]["max_rel"])
    return {"within_parity_bounds": not outside, "outside": outside,
            "worst_relative": {"feature": worst, **per[worst]},
            "absolute_bound_features": {n: per[n] for n in ABSOLUTE}, "per_feature": per}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=14.0, help="longest clip (the others up to 6 %% shorter)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--top", type=int, default=15, help="ops listed from the profiler")
    parser.add_argument("--targets-dir", type=Path,
                        default=Path(os.environ.get("VOICESEARCH_TARGETS_DIR") or REPO.parent / "shared/data/targets"))
    parser.add_argument("--compare", type=Path, help="an earlier run's JSON: check these features against its features")
    parser.add_argument("--reference", action="store_true", help="also compare with librosa's features (slow)")
    parser.add_argument("--baseline", metavar="REV|FILE", help="also time scorers/features.py of this git revision (or this "
                        "copy of it), interleaved with the working tree's, and check the working tree's features against it")
    parser.add_argument("--out", type=Path, help="write the JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    audio = build_batch(args.batch, args.seconds, args.targets_dir)
    extractor = TorchFeatures().to(device)
    extractors = {"current": extractor}
    if args.baseline:
        extractors["baseline"] = baseline_extractor(args.baseline).to(device)
    gpu_audio = AudioBatch(audio.wave.to(device), audio.lengths.to(device), audio.sample_rate)
    timed = time_extract(extractors, gpu_audio, device, args.repeats)
    features, current = timed["current"]["features"], summary(timed["current"], args.batch)
    median = current["median_s"]
    print(f"{args.batch} clips of {audio.lengths.min() / SAMPLE_RATE:.2f}-{audio.lengths.max() / SAMPLE_RATE:.2f} s on "
          f"{args.device}: median {median:.3f} s ({current['clips_per_s']} clips/s), process CPU "
          f"{current['median_process_cpu_s']:.3f} s; runs {current['times_s']}")
    top_ops = profile(extractor, gpu_audio, device, args.top)
    name = str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f" ({platform.processor() or platform.machine()})")
    report: dict[str, Any] = {
        "device": name,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "command": "python benchmarks/features_speed.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
        "host": platform.node(),
        "batch": args.batch,
        "clip_seconds": {"min": round(float(audio.lengths.min()) / SAMPLE_RATE, 3), "max": round(float(audio.lengths.max()) / SAMPLE_RATE, 3),
                         "total": round(float(audio.lengths.sum()) / SAMPLE_RATE, 3)},
        "source": "kvoicewalk_example_target.wav, tiled; clip i starts at i x 1.37 s",
        "repeats": args.repeats,
        **current,
        "top_ops": top_ops,
    }
    status = 0
    if args.baseline:
        base = summary(timed["baseline"], args.batch)
        dev = deviation(features, timed["baseline"]["features"])
        report["baseline"] = {"rev": args.baseline, **base, "speedup_wall": round(base["median_s"] / median, 2),
                              "speedup_process_cpu": round(base["median_process_cpu_s"] / current["median_process_cpu_s"], 2), **dev}
        print(f"baseline {args.baseline}: median {base['median_s']:.3f} s, process CPU {base['median_process_cpu_s']:.3f} s, "
              f"runs {base['times_s']}; speed-up x{report['baseline']['speedup_wall']} (wall), "
              f"x{report['baseline']['speedup_process_cpu']} (CPU); within parity bounds: {dev['within_parity_bounds']} "
              f"{dev['outside'] or ''}; worst relative {dev['worst_relative']}")
        status = 0 if dev["within_parity_bounds"] else 1
    if args.compare:
        earlier = json.loads(args.compare.read_text())
        if earlier.get("batch") != args.batch or earlier.get("clip_seconds") != report["clip_seconds"]:
            print(f"--compare {args.compare}: a different batch ({earlier.get('batch')} clips, {earlier.get('clip_seconds')}); not compared")
        else:
            dev = deviation(features, torch.tensor(earlier["features"], dtype=torch.float64))
            report["compare"] = {"with": str(args.compare), "with_date": earlier.get("date"), "with_median_s": earlier.get("median_s"),
                                 "speedup": round(earlier["median_s"] / median, 2), **dev}
            print(f"against {args.compare}: within parity bounds: {dev['within_parity_bounds']} {dev['outside'] or ''}; "
                  f"worst relative {dev['worst_relative']}; speed-up x{report['compare']['speedup']}")
            status = status or (0 if dev["within_parity_bounds"] else 1)
    if args.reference:
        dev = deviation(features, features_librosa(audio))
        report["librosa_reference"] = dev
        print(f"against librosa: within parity bounds: {dev['within_parity_bounds']} {dev['outside'] or ''}; worst relative {dev['worst_relative']}")
        status = status or (0 if dev["within_parity_bounds"] else 1)
    report["features"] = features.tolist()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
