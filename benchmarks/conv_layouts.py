"""Time the convolutions of Kokoro's generator alone, in several memory layouts, at the render loop's shapes.

The compiled bf16 forward reaches 12.8 % of the H200's bf16 peak, and 98 % of its FLOPs are the generator's 1-D
convolutions. This measures whether those convolutions themselves are the bound, and whether another layout
runs them faster, without Kokoro's weights (only the shapes matter, so the box needs nothing but torch):

- `ncl`: F.conv1d on (B, C, T), as Kokoro runs them;
- `ncl+bench`: the same with cuDNN's autotuner (torch.backends.cudnn.benchmark);
- `nhwc+bench`: F.conv2d on (B, C, 1, T) in channels-last memory with a (O, C, 1, k) kernel, autotuned;
- `ncl-noise` times nothing new: it is how far apart two `ncl` repeats are, the noise floor of the comparison.

    python benchmarks/conv_layouts.py --device cuda --batch 128 --seconds 15 --out benchmarks/results/conv_layouts.json

`GENERATOR_CONVS` lists the convolutions with their rate (input frames per second of audio). A CPU test checks it
against the generator Kokoro builds, so a change there shows up here.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F


class ConvShape(NamedTuple):
    name: str
    c_in: int
    c_out: int
    kernel: int
    dilation: int
    padding: int
    rate: int  # input frames per second of audio
    transposed: bool = False
    stride: int = 1


def _resblocks(prefix: str, first: int, channels: int, kernels: tuple[int, ...], rate: int) -> list[ConvShape]:
    shapes = []
    for b, k in enumerate(kernels):
        for part, dilations in (("convs1", (1, 3, 5)), ("convs2", (1, 1, 1))):
            for j, d in enumerate(dilations):
                shapes.append(ConvShape(f"{prefix}.{first + b}.{part}.{j}", channels, channels, k, d, d * (k - 1) // 2, rate))
    return shapes


# Kokoro-82M's iSTFTNet generator (24 kHz, 40 decoder frames per second): 80 frames/s in, x10 then x6 upsampling.
GENERATOR_CONVS: list[ConvShape] = [
    ConvShape("ups.0", 512, 256, 20, 1, 5, 80, transposed=True, stride=10),
    ConvShape("noise_convs.0", 22, 256, 12, 1, 3, 4801, stride=6),  # the harmonic source's STFT, down to 800/s
    *_resblocks("noise_res", 0, 256, (7,), 800),
    *_resblocks("resblocks", 0, 256, (3, 7, 11), 800),
    ConvShape("ups.1", 256, 128, 12, 1, 3, 800, transposed=True, stride=6),
    ConvShape("noise_convs.1", 22, 128, 1, 1, 0, 4801),
    *_resblocks("noise_res", 1, 128, (11,), 4800),
    *_resblocks("resblocks", 3, 128, (3, 7, 11), 4800),
    ConvShape("conv_post", 128, 22, 7, 1, 3, 4801),
]


def flops(shape: ConvShape, frames: int, batch: int) -> int:
    out_frames = frames * shape.stride if shape.transposed else frames // shape.stride
    taps = shape.kernel / shape.stride if shape.transposed else shape.kernel
    return int(2 * batch * out_frames * shape.c_out * shape.c_in * taps)


def make_call(shape: ConvShape, layout: str, x: torch.Tensor, w: torch.Tensor) -> Callable[[], torch.Tensor]:
    if shape.transposed:
        if layout == "nhwc+bench":
            x4 = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
            w4 = w.unsqueeze(2).contiguous(memory_format=torch.channels_last)
            return lambda: F.conv_transpose2d(x4, w4, stride=(1, shape.stride), padding=(0, shape.padding))
        return lambda: F.conv_transpose1d(x, w, stride=shape.stride, padding=shape.padding)
    if layout == "nhwc+bench":
        x4 = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        w4 = w.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        return lambda: F.conv2d(x4, w4, stride=(1, shape.stride), padding=(0, shape.padding), dilation=(1, shape.dilation))
    return lambda: F.conv1d(x, w, stride=shape.stride, padding=shape.padding, dilation=shape.dilation)


def time_call(call: Callable[[], torch.Tensor], repeats: int, device: torch.device) -> list[float]:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    call(), call()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "fp32"))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=15.0, help="padded length of every item")
    ap.add_argument("--layouts", default="ncl,ncl+bench,nhwc+bench")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", help="comma-separated conv names (default: all)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    layouts = [l.strip() for l in args.layouts.split(",") if l.strip()]
    shapes = [s for s in GENERATOR_CONVS if not args.only or s.name in args.only.split(",")]
    gen = torch.Generator(device=device).manual_seed(0)
    rows = []
    with torch.no_grad():
        for shape in shapes:
            frames = int(round(args.seconds * shape.rate))
            x = torch.randn(args.batch, shape.c_in, frames, generator=gen, device=device, dtype=dtype)
            w_shape = (shape.c_in, shape.c_out, shape.kernel) if shape.transposed else (shape.c_out, shape.c_in, shape.kernel)
            w = (torch.randn(w_shape, generator=gen, device=device) / (shape.c_in * shape.kernel) ** 0.5).to(dtype)
            row = {**shape._asdict(), "frames": frames, "gflop": round(flops(shape, frames, args.batch) / 1e9, 2)}
            reference = None
            for layout in layouts:
                torch.backends.cudnn.benchmark = layout.endswith("+bench")
                call = make_call(shape, layout, x, w)
                times = time_call(call, args.repeats, device)
                out = call().reshape(args.batch, shape.c_out, -1).float()
                if reference is None:
                    reference = out
                row[layout] = {"median_s": round(statistics.median(times), 6), "times_s": [round(t, 6) for t in times],
                               "tflop_per_s": round(flops(shape, frames, args.batch) / statistics.median(times) / 1e12, 1),
                               "max_rel_diff": round(float((out - reference).abs().max() / reference.abs().max()), 5)}
                del call, out
            rows.append(row)
            print(json.dumps({k: (v["median_s"] if isinstance(v, dict) else v) for k, v in row.items()
                              if k in ("name", "frames", "gflop", *layouts)}))
            del x, w, reference
            if device.type == "cuda":
                torch.cuda.empty_cache()
    audio_seconds = args.batch * args.seconds
    totals = {l: round(sum(r[l]["median_s"] for r in rows), 4) for l in layouts}
    total_gflop = sum(r["gflop"] for r in rows)
    result = {
        "benchmark": "conv_layouts",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__, "python": platform.python_version(),
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "dtype": args.dtype, "batch": args.batch, "seconds": args.seconds, "audio_seconds": audio_seconds,
        "gflop_per_audio_s": round(total_gflop / audio_seconds, 2),
        "total_s": totals,
        "audio_s_per_s_convs_only": {l: round(audio_seconds / t, 1) for l, t in totals.items()},
        "tflop_per_s": {l: round(total_gflop / t / 1e3, 1) for l, t in totals.items()},
        "rows": rows,
    }
    print(json.dumps({k: result[k] for k in ("device", "gflop_per_audio_s", "total_s", "audio_s_per_s_convs_only", "tflop_per_s")}))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
