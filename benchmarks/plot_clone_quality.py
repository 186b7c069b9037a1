"""The picture for docs/quality.md: held-out closure and DNSMOS against evaluations, from clone_quality.json.

    python benchmarks/plot_clone_quality.py [benchmarks/results/clone_quality.json] [docs/clone_quality.png]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LABELS = {"baseline": "Resemblyzer objective, judged by ECAPA", "ecapa": "ECAPA objective (new default), judged by Resemblyzer"}


def main(source: Path, out: Path) -> None:
    data = json.loads(source.read_text())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for method, label in LABELS.items():
        entry = data["summary"][method]
        for kind, style in (("devset", "-o"), ("loo", "--s")):
            sub = entry.get(kind)
            if not sub:
                continue
            judge = next(j for j in ("ecapa", "resemblyzer") if sub[j]["held_out"])
            evals = [p["evals"] for p in sub["curve"]]
            name = f"{label}, {'9 real speakers' if kind == 'devset' else '5 hidden stock voices'}"
            axes[0].plot(evals, [100 * p[judge]["mean_closure"] for p in sub["curve"]], style, label=name)
            axes[1].plot(evals, [p["dnsmos_clone"] for p in sub["curve"]], style, label=name)
            if kind == "devset":
                axes[1].axhline(sub["dnsmos_stock"] - 0.1, color="grey", lw=0.8, ls=":")
    axes[0].axhline(0, color="grey", lw=0.8)
    axes[0].set(xlabel="evaluations (renders scored)", ylabel="mean closure under the held-out judge, %",
                title="Similarity the search did not optimize")
    axes[1].set(xlabel="evaluations (renders scored)", ylabel="DNSMOS OVRL of the clone",
                title="Audio quality (dotted: stock mean − 0.1)")
    axes[0].legend(fontsize=7, loc="upper left")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "benchmarks/results/clone_quality.json",
         Path(sys.argv[2]) if len(sys.argv) > 2 else REPO / "docs/clone_quality.png")
