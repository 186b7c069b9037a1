"""The picture for docs/quality.md, from clone_quality.json: held-out closure against evaluations, the default per
speaker, and audio quality.

    python benchmarks/plot_clone_quality.py [benchmarks/results/clone_quality.json] [docs/clone_quality.png]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
JUDGE = "campplus"  # the judge none of these methods optimized
CURVES = {"default": "ECAPA + Resemblyzer (the default)", "ecapa-avg4": "ECAPA", "ecapa-pitch-768": "ECAPA + pitch"}


def main(source: Path, out: Path) -> None:
    data = json.loads(source.read_text())
    summary, rows = data["summary"], data["rows"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))

    ax = axes[0]
    for method, label in CURVES.items():
        curve = summary[method]["devset"]["curve"]
        evals = [p["evals"] for p in curve]
        closure = [100 * p[JUDGE]["mean_closure"] for p in curve]
        line, = ax.plot(evals, closure, "-o", label=f"objective {label}")
        if summary[method]["answer"].startswith("mean"):  # the last point is the chain mean, the others the best scored
            ax.plot(evals[-1:], closure[-1:], "*", ms=14, color=line.get_color())
    ax.axhline(0, color="grey", lw=0.8)
    ax.axhline(40, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="evaluations (renders scored)", ylabel="mean closure under CAM++, %",
           title="9 real speakers, judged by CAM++ (never optimized)\n★ the answer: mean of the 4 best chains")
    ax.legend(fontsize=8, loc="lower right")

    ax = axes[1]
    mine = [r for r in rows if r["method"] == "default" and r["kind"] == "devset"]
    names = [r["target"].replace("VCTK-", "").replace("_023", "").replace("_inaugural1961", "")[:10] for r in mine]
    answer = [100 * r["judges"][JUDGE]["closure"] for r in mine]
    best = [100 * r["consensus"]["best-scored"]["judges"][JUDGE]["closure"] for r in mine]
    at = np.arange(len(mine))
    ax.bar(at - 0.2, best, 0.4, label="best scored voice", color="#bbbbbb")
    ax.bar(at + 0.2, answer, 0.4, label="mean of the 4 best chains (returned)", color="#1f77b4")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(at, names, rotation=45, ha="right", fontsize=8)
    ax.set(ylabel="closure under CAM++, % (0 = best stock voice)", title="The default, per speaker")
    ax.legend(fontsize=8)

    ax = axes[2]
    methods = [m for m in CURVES if "best-scored" in summary[m]["devset"].get("consensus", {})] or list(CURVES)
    stock = summary["default"]["devset"]["dnsmos_stock"]
    for i, method in enumerate(methods):
        sub = summary[method]["devset"]
        scored = sub.get("consensus", {}).get("best-scored", {}).get("dnsmos_clone")
        if scored is not None:
            ax.bar(i - 0.2, scored, 0.4, color="#bbbbbb", label="best scored voice" if i == 0 else None)
        ax.bar(i + 0.2, sub["dnsmos_clone"], 0.4, color="#1f77b4", label="returned voice" if i == 0 else None)
    ax.axhline(stock, color="green", lw=1, label=f"stock voices ({stock:.2f})")
    ax.axhline(stock - 0.1, color="grey", lw=0.8, ls=":", label="guard: stock − 0.1")
    ax.set_xticks(range(len(methods)), [f"objective\n{CURVES[m]}" for m in methods], fontsize=8)
    ax.set(ylim=(3.0, 3.6), ylabel="DNSMOS OVRL (mean of 9 speakers)", title="Audio quality")
    ax.legend(fontsize=8, loc="upper right")
    for a in axes:
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "benchmarks/results/clone_quality.json",
         Path(sys.argv[2]) if len(sys.argv) > 2 else REPO / "docs/clone_quality.png")
