"""Draw benchmarks/results/recovery.json as one picture (docs/recovery.png).

Left: leave-one-out — for each strategy, how far the held-out judge moved from the best remaining stock
voice to the found voice, one dot per hidden voice, the bar at the mean. Right: KVoiceWalk's example
target — the highest Resemblyzer similarity each strategy reached, against the seed's 0.917.

    python benchmarks/plot_recovery.py [--results benchmarks/results/recovery.json] [--out docs/recovery.png]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = "kvoicewalk_example_target.wav"


def load(path: Path) -> tuple[dict, list[dict], list[dict]]:
    report = json.loads(path.read_text(encoding="utf-8"))
    rows = [r for r in report["rows"] if r.get("final") is not None]
    loo = [r for r in rows if r["target"] != EXAMPLE]
    example = [r for r in rows if r["target"] == EXAMPLE and "searched" in r["judge"]]
    return report, loo, example


def draw(report: dict, loo: list[dict], example: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strategies = list(dict.fromkeys(r["strategy"] for r in loo + example))
    targets = list(dict.fromkeys(r["target"] for r in loo))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.25, 1]})

    markers = "os^Dv<>"
    for i, strategy in enumerate(strategies):
        gains = [r["final"] - r["start"] for r in loo if r["strategy"] == strategy]
        if not gains:
            continue
        mean = sum(gains) / len(gains)
        left.bar(i, mean, color="#4c72b0" if mean > 0 else "#c44e52", alpha=0.35, width=0.7)
        for j, target in enumerate(targets):
            row = next((r for r in loo if r["strategy"] == strategy and r["target"] == target), None)
            if row:
                left.scatter(i + (j - 2) * 0.1, row["final"] - row["start"], marker=markers[j % len(markers)],
                             color="black", s=22, label=target if i == 0 else None, zorder=3)
    left.axhline(0, color="gray", lw=1)
    left.set_xticks(range(len(strategies)), strategies, rotation=25, ha="right")
    evals = sorted({r["evals"] for r in loo})
    left.set_title(f"Leave-one-out: held-out ECAPA, found voice − best remaining stock voice\n"
                   f"(search optimizes Resemblyzer; ~{evals[0]}–{evals[-1]} evaluations each)", fontsize=10)
    left.set_ylabel("change in judge similarity (higher is better)")
    left.legend(title="hidden voice", fontsize=8, title_fontsize=8, loc="upper left")

    order = [s for s in strategies if any(r["strategy"] == s for r in example)]
    for i, strategy in enumerate(order):
        row = next(r for r in example if r["strategy"] == strategy)
        reached = row.get("highest_target_similarity") or row["final"]
        right.bar(i, reached, color="#55a868" if row.get("evals_to_threshold") else "#8c8c8c", width=0.7)
        note = (f"0.917 at {row['evals_to_threshold']} evals\n{row['seconds_to_threshold']:.0f} s"
                if row.get("evals_to_threshold") else f"{row['evals']} evals\n{row['seconds']:.0f} s")
        right.text(i, reached + 0.005, note, ha="center", va="bottom", fontsize=7)
    if example:
        right.axhline(example[0]["threshold"], color="#c44e52", ls="--", lw=1,
                      label=f"KVoiceWalk after 10,000 steps: {example[0]['threshold']}")
        right.axhline(example[0]["start"], color="black", ls=":", lw=1,
                      label=f"best stock voice ({example[0]['start_voice']}): {example[0]['start']:.3f}")
        right.legend(fontsize=7, loc="upper left")
    right.set_xticks(range(len(order)), order, rotation=25, ha="right")
    right.set_ylim(0.55, 1.08)
    right.set_title("KVoiceWalk's example target: highest Resemblyzer similarity\n"
                    "(hybrid scorer; gradient runs optimize its Resemblyzer part)", fontsize=10)
    fig.suptitle(f"{report.get('device', '')} · {report.get('date', '')[:10]}", fontsize=8, y=0.02)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks/results/recovery.json")
    parser.add_argument("--out", type=Path, default=REPO / "docs/recovery.png")
    args = parser.parse_args(argv)
    draw(*load(args.results), args.out)


if __name__ == "__main__":
    main()
