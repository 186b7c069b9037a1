"""The prosody LSTMs with gradients: cuDNN (the LSTM put in training mode, `forward.recurrent`) against the native
kernel (cuDNN off, how the differentiable renderer ran them before), on the shapes of a default search step.

Kokoro's predictor runs a bidirectional LSTM (640 -> 2 x 256) over every frame of every voice (`shared`, ~80 frames
per second of speech) and one over the tokens (`text_encoder`). With cuDNN off each time step is its own matrix
product; profile_step.py found the predictor at 15 % of a step. This checks on the GPU that the cuDNN path gives the
same outputs and gradients and times both (forward + backward, median of --repeats after warm-up).

    python benchmarks/lstm_backward.py --out benchmarks/results/lstm_backward.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import statistics
import sys
import time

import torch
import torch.nn as nn

from voicesearch.kokoro.forward import packed_lstm, recurrent


def fwd_bwd(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor, cudnn: bool) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    if cudnn:
        with recurrent(x.device, True, lstm):
            out = packed_lstm(lstm, x, lengths)
    else:
        with torch.backends.cudnn.flags(enabled=False), torch.autocast(x.device.type, enabled=False):
            out = packed_lstm(lstm, x, lengths)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    return out.detach(), grad


def timed(fn, repeats: int, device: torch.device) -> list[float]:
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out")
    args = p.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    rows = []
    # shared: frames of ~5.3 s of speech (80 frames/s); text_encoder: ~80 tokens
    for name, steps in (("shared (frames)", 424), ("text_encoder (tokens)", 80)):
        lstm = nn.LSTM(640, 256, 1, batch_first=True, bidirectional=True).to(device).eval()
        x = torch.randn(args.batch, steps, 640, generator=g).to(device)
        lengths = torch.randint(int(steps * 0.8), steps + 1, (args.batch,), generator=g)
        lengths[0] = steps
        out_a, grad_a = fwd_bwd(lstm, x, lengths, cudnn=False)
        out_b, grad_b = fwd_bwd(lstm, x, lengths, cudnn=True)
        assert not lstm.training, "recurrent() must put the LSTM back in eval mode"
        native = timed(lambda: fwd_bwd(lstm, x, lengths, cudnn=False), args.repeats, device)
        cudnn = timed(lambda: fwd_bwd(lstm, x, lengths, cudnn=True), args.repeats, device)
        rows.append({"lstm": name, "batch": args.batch, "steps": steps,
                     "max_abs_diff_out": float((out_a - out_b).abs().max()),
                     "max_abs_diff_grad": float((grad_a - grad_b).abs().max()),
                     "native_ms": round(1e3 * statistics.median(native), 3),
                     "cudnn_ms": round(1e3 * statistics.median(cudnn), 3),
                     "speedup": round(statistics.median(native) / statistics.median(cudnn), 2)})
        print(json.dumps(rows[-1]), flush=True)
    report = {"benchmark": "lstm_backward", "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor(),
              "torch": torch.__version__, "python": platform.python_version(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            f.write(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
