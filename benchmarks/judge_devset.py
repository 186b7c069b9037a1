"""Speaker embedders as judges on the dev set: same speaker (two halves of a clip) vs different speakers.

For each clip of --devset, at 16 kHz (soxr), the first and second halves are embedded; `same` is the cosine of a
clip's two halves, `cross` the cosine of one clip's first half with another clip's second half (all ordered
pairs). A judge separates speakers when min(same) > max(cross); `margin` = min(same) - max(cross). The VCTK clips
all read the same sentence, so their cross pairs share words with their same pairs.

    python benchmarks/judge_devset.py --scorers ecapa,resemblyzer,campplus --out benchmarks/results/judge_devset.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from voicesearch.registry import get  # noqa: E402
from voicesearch.types import AudioBatch  # noqa: E402


def halves(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    wave, sr = sf.read(path, dtype="float32", always_2d=True)
    wave = soxr.resample(wave.mean(1), sr, 16000).astype(np.float32)
    mid = len(wave) // 2
    return torch.from_numpy(wave[:mid].copy()), torch.from_numpy(wave[mid:].copy())


def judge(name: str, clips: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    embedder = get("scorers", name)().embedder
    names = list(clips)
    with torch.no_grad():
        first = torch.cat([embedder.embed_clips([clips[n][0]], 16000) for n in names])
        second = torch.cat([embedder.embed_clips([clips[n][1]], 16000) for n in names])
    sims = (first @ second.T).numpy()
    same = np.diag(sims)
    cross = sims[~np.eye(len(names), dtype=bool)]
    return {"scorer": name, "same": {n: round(float(s), 4) for n, s in zip(names, same)},
            "same_mean": round(float(same.mean()), 4), "same_min": round(float(same.min()), 4),
            "cross_mean": round(float(cross.mean()), 4), "cross_max": round(float(cross.max()), 4),
            "margin": round(float(same.min() - cross.max()), 4),
            "mean_gap": round(float(same.mean() - cross.mean()), 4)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devset", default=os.environ.get("VOICESEARCH_DEVSET", str(REPO.parent / "shared/data/devset")))
    p.add_argument("--scorers", default="ecapa,resemblyzer,campplus")
    p.add_argument("--out", default=str(REPO / "benchmarks/results/judge_devset.json"))
    args = p.parse_args(argv)
    paths = sorted(Path(args.devset).glob("*.flac"))
    if not paths:
        p.error(f"no .flac clips in --devset {args.devset}")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    clips = {path.stem: halves(path) for path in paths}
    rows = [judge(name, clips) for name in args.scorers.split(",")]
    result = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
              "versions": {"python": platform.python_version(), "torch": torch.__version__},
              "clips": [path.name for path in paths], "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for r in rows:
        print(f"{r['scorer']:12s} same mean {r['same_mean']:.3f} min {r['same_min']:.3f} | "
              f"cross mean {r['cross_mean']:.3f} max {r['cross_max']:.3f} | margin {r['margin']:+.3f}")


if __name__ == "__main__":
    main()
