"""Scorer throughput: candidates scored per second, one batched `score()` call at a time.

Each row of `ROWS` names a registered scorer (plus options) or a reference implementation; add a row
to benchmark a new scorer. Candidates are copies of one clip (the example target cut to --seconds,
or a synthetic voice-like signal when the target is not found) at Kokoro's 24 kHz, handed to the
scorer through a `Renders` over recorded audio, so staged scorers (hybrid) work too. Rows whose
optional packages or weights are missing are skipped with the reason.

    python benchmarks/scorer_throughput.py --device cuda --out benchmarks/results/scorer_throughput.json
    python benchmarks/scorer_throughput.py --device cpu --seconds 3 --batches 1,4 --repeats 1   # smoke test
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]

from voicesearch.renderer import Renders  # noqa: E402
from voicesearch.types import AudioBatch, TargetSpeech  # noqa: E402

RATE = 24000
TEXT = "The old lighthouse keeper never imagined that one day he'd be guiding ships from his living room."


@dataclass
class Row:
    """A scorer by registry name with options, or `custom(wave, sample_rate, batch, device, repeats) -> s per batch`."""

    scorer: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    custom: Callable[..., float] | None = None
    note: str = ""
    max_batch: int | None = None  # sequential references: larger batches only repeat the same per-item work


def wavlm_base_config() -> Any:
    """microsoft/wavlm-base-plus-sv's architecture (WavLM base + x-vector head) with random weights: the hub is not
    reachable on the benchmark box; speed depends on the architecture, not on the weight values."""
    from transformers import WavLMConfig

    return WavLMConfig(use_weighted_layer_sum=True, tdnn_dim=(512, 512, 512, 512, 1500),
                       tdnn_kernel=(5, 3, 3, 1, 1), tdnn_dilation=(1, 2, 3, 1, 1), xvector_output_dim=512)


def reference_resemblyzer(wave: torch.Tensor, sample_rate: int, batch: int, device: str, repeats: int) -> float:
    """resemblyzer's own pipeline, one utterance at a time: preprocess_wav + VoiceEncoder.embed_utterance."""
    from resemblyzer import VoiceEncoder, preprocess_wav

    encoder = VoiceEncoder(device, verbose=False)
    clip = wave.numpy()
    encoder.embed_utterance(preprocess_wav(clip, source_sr=sample_rate))  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        for _ in range(batch):
            encoder.embed_utterance(preprocess_wav(clip, source_sr=sample_rate))
    _sync(device)
    return (time.perf_counter() - start) / repeats


ROWS: dict[str, Row] = {
    "resemblyzer": Row("resemblyzer", note="torch batch, webrtcvad trim on CPU"),
    "resemblyzer-novad": Row("resemblyzer", {"vad": "none"}, note="torch batch, no VAD (all on device)"),
    "resemblyzer-reference": Row(custom=reference_resemblyzer, note="resemblyzer package, per utterance", max_batch=4),
    "ecapa": Row("ecapa", note="ECAPA-TDNN, torch batch"),
    "wavlm": Row("wavlm", {"model": wavlm_base_config}, note="WavLM base-plus-sv architecture, random weights (no hub here)"),
    "features": Row("features", note="KVoiceWalk's feature similarity, torch batch (beat tracking per item on CPU)"),
    "features-librosa": Row("features", {"backend": "librosa"}, note="the same features through librosa, per clip", max_batch=4),
    "hybrid": Row("hybrid", note="KVoiceWalk hybrid: resemblyzer + self-similarity + torch features; every candidate passes the early exit"),
    "hybrid-librosa": Row("hybrid", {"features": "librosa"}, note="hybrid with the librosa features, per clip", max_batch=4),
    "dnsmos": Row("dnsmos", note="DNSMOS P.835 ONNX (onnxruntime CPU), segments batched"),
}


class ClipRenderer:
    """Renderer protocol over one recorded clip: every candidate says it, with a slightly different gain."""

    sample_rate = RATE

    def __init__(self, wave: torch.Tensor, device: torch.device):
        self.wave, self.device = wave.to(device), device

    def render(self, packs: torch.Tensor, text: str, *, speed: float = 1.0, differentiable: bool = False) -> AudioBatch:
        gains = 1.0 + 0.01 * torch.arange(packs.shape[0], device=self.device, dtype=torch.float32)
        wave = gains[:, None] * self.wave[None]
        if differentiable:
            wave = wave.detach().requires_grad_(True)
        return AudioBatch(wave, torch.full((packs.shape[0],), self.wave.shape[0], device=self.device), RATE)

    def stock_voices(self):
        raise NotImplementedError("not needed for the benchmark")


def _sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def load_clip(seconds: float) -> tuple[torch.Tensor, str]:
    targets = Path(os.environ.get("VOICESEARCH_TARGETS_DIR", REPO.parent / "shared" / "data" / "targets"))
    path = targets / "kvoicewalk_example_target.wav"
    n = int(seconds * RATE)
    if path.is_file():
        import soundfile as sf

        from voicesearch.resample import resample

        wave, sr = sf.read(path, dtype="float32", always_2d=True)
        clip = resample(torch.from_numpy(wave.mean(1)), sr, RATE)
        clip = clip.repeat(-(-n // clip.shape[0]))[:n]
        return clip.contiguous(), str(path)
    t = torch.arange(n) / RATE
    f0 = 120 + 20 * torch.sin(2 * torch.pi * 0.7 * t)
    phase = 2 * torch.pi * torch.cumsum(f0, 0) / RATE
    gate = (torch.sin(2 * torch.pi * 2.5 * t) > -0.3).float()
    clip = sum(torch.sin(k * phase) / k for k in range(1, 8)) * 0.1 * gate
    return clip.float(), "synthetic harmonic signal (example target not found)"


def time_scorer(row: Row, clip: torch.Tensor, batch: int, device: str, repeats: int, grad: bool) -> dict[str, Any]:
    from voicesearch import registry

    options = {k: v() if callable(v) else v for k, v in row.options.items()}
    scorer = registry.get("scorers", row.scorer)(device=device, **options)
    target = TargetSpeech([clip.cpu()], [TEXT], RATE)
    state = scorer.prepare(target)
    renderer = ClipRenderer(clip, torch.device(device))
    packs = torch.zeros(batch, 510, 256)
    texts = scorer.texts(target)

    def once() -> None:
        renders = Renders(renderer, packs, texts, differentiable=grad)
        with torch.set_grad_enabled(grad):
            result = scorer.score(renders, state)
            if grad:
                result.total.sum().backward()

    once()  # warm-up (lazy model load, cuDNN autotune)
    _sync(device)
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(repeats):
        once()
    _sync(device)
    seconds = (time.perf_counter() - start) / repeats
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.device(device).type == "cuda" else None
    return {"s_per_batch": seconds, "peak_cuda_mib": peak}


def run_row(name: str, row: Row, clip: torch.Tensor, batch: int, device: str, repeats: int, grad: bool) -> dict[str, Any]:
    batch = min(batch, row.max_batch or batch)
    options = {k: getattr(v, "__name__", v) for k, v in row.options.items()}
    out: dict[str, Any] = {"row": name, "scorer": row.scorer or None, "options": options, "note": row.note,
                           "batch": batch, "grad": grad and row.custom is None, "audio_s": clip.shape[0] / RATE}
    try:
        if row.custom is not None:
            timing = {"s_per_batch": row.custom(clip, RATE, batch, device, repeats), "peak_cuda_mib": None}
        else:
            timing = time_scorer(row, clip, batch, device, repeats, grad)
    except (ImportError, OSError, ValueError, RuntimeError) as e:  # InputError is a ValueError
        return out | {"status": "skipped", "reason": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    return out | {"status": "ok", **timing, "items_per_s": batch / timing["s_per_batch"]}


def ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Our batched scorer at its best batch over the reference code path, items per second."""
    best: dict[str, float] = {}
    for r in rows:
        if r["status"] == "ok" and not r["grad"]:
            best[r["row"]] = max(best.get(r["row"], 0.0), r["items_per_s"])
    pairs = {"resemblyzer_over_reference": ("resemblyzer", "resemblyzer-reference"),
             "features_over_librosa": ("features", "features-librosa"),
             "hybrid_over_librosa_hybrid": ("hybrid", "hybrid-librosa")}
    return {k: round(best[a] / best[b], 1) for k, (a, b) in pairs.items() if a in best and b in best}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=20.0, help="clip length per candidate")
    parser.add_argument("--batches", default="1,64", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of: {', '.join(ROWS)}")
    parser.add_argument("--grad", action="store_true", help="also time forward + backward to the waveform")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    unknown = [r for r in args.rows.split(",") if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; known: {', '.join(ROWS)}")
    clip, source = load_clip(args.seconds)
    rows, done = [], set()
    for name in args.rows.split(","):
        for batch in [int(b) for b in args.batches.split(",")]:
            for grad in [False, True] if args.grad else [False]:
                key = (name, min(batch, ROWS[name].max_batch or batch), grad)
                if (grad and ROWS[name].custom is not None) or key in done:
                    continue
                done.add(key)
                row = run_row(name, ROWS[name], clip, batch, args.device, args.repeats, grad)
                rows.append(row)
                speed = f"{row['items_per_s']:.2f}/s" if row["status"] == "ok" else row["reason"]
                print(f"{name:24s} batch {row['batch']:3d}{' grad' if grad else ''}: {speed}", flush=True)
    device = args.device
    if torch.device(device).type == "cuda":
        device = f"{device} ({torch.cuda.get_device_name()})"
    report = {
        "device": device,
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv] if argv is None else ["python", __file__, *argv]),
        "host": platform.node(),
        "clip": source,
        "rows": rows,
        "ratios": ratios(rows),
    }
    print(json.dumps(report["ratios"], indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
