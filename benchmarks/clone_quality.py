"""Clone quality on real people, judged by embedders the search did not optimize (issue #12's protocol).

For each target — the 9 real speakers of the dev set (one clip each, with its transcript) and hidden stock
voices (leave-one-out: the voice speaks SEARCH_TEXT and is removed from the stock set) — and each method:

1. clone: `voicesearch.session.build(config)` + `Search.run()`, the path `voicesearch clone` takes (one renderer
   shared by the clones of a process; the run-directory recorder is left out);
2. render JUDGE_TEXTS (sentences neither the clip nor the search contains) with the clone and with every
   English stock voice (a..., b...; the hidden one excluded);
3. judge each render with each judge (ecapa, resemblyzer): cosine to the real clip, mean over the judge texts.
   floor = the best stock voice under that judge; ceiling = the judge's similarity between the first and
   second half of the real clip (leave-one-out: the hidden voice's own render of the judge texts);
   closure = (clone − floor) / (ceiling − floor);
4. DNSMOS OVRL of the clone's renders, of the floor voice's and the mean of all English stock renders.

A method is summarized only under the judges it did not optimize (`optimizes` in METHODS).

    python benchmarks/clone_quality.py --write-phonemes benchmarks/results/quality_phonemes.json   # where misaki runs
    python benchmarks/clone_quality.py --device cuda --methods default --renderer kokoro-table \\
        --plugin benchmarks/phoneme_table.py --out benchmarks/results/clone_quality.json
    python benchmarks/clone_quality.py --merge a.json b.json --out benchmarks/results/clone_quality.json
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
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from voicesearch import registry
from voicesearch.audio import load_target
from voicesearch.cpu import leading_text
from voicesearch.evaluate import JUDGE_TEXTS as EVALUATE_TEXTS, half_similarity
from voicesearch.loop import Callback
from voicesearch.renderer import Renders
from voicesearch.session import build, build_renderer, make_config, resolve_device
from voicesearch.stock import StockVoices, voices_folder_from_env
from voicesearch.types import TargetSpeech
from voicesearch.voice import atomic_write_bytes

SEARCH_TEXT = ("Every morning the baker opened his shop before sunrise, and the smell of fresh bread drifted "
               "down the quiet street.")
JUDGE_TEXTS = list(EVALUATE_TEXTS)  # `voicesearch evaluate` speaks the same two sentences by default
LOO_TARGETS = "af_heart,bm_george,am_michael,bf_emma,af_nicole"
JUDGES = ("ecapa", "resemblyzer", "campplus")
#: Which held-out judge a summary leads with: the one that separates speakers best on the dev set
#: (benchmarks/results/judge_devset.json: min same-speaker − max cross-speaker cosine, ECAPA +0.26, CAM++ +0.17,
#: Resemblyzer +0.00) among those the method did not optimize; CAM++ first because no method here optimizes it.
HEADLINE_ORDER = ("campplus", "ecapa", "resemblyzer")

#: name -> scorer, scorer options, strategy, strategy options, which judges it optimizes. "default" leaves
#: strategy, space and scorer to `voicesearch clone`'s defaults (what a user gets with no options).
METHODS: dict[str, dict[str, Any]] = {
    "default": {},
    "baseline": {"scorer": "resemblyzer", "scorer_options": {"probes": 0, "augment": 0},
                 "note": "round-1 default: gradient in pca on Resemblyzer, transcript only"},
    "res-probes-eot": {"scorer": "resemblyzer", "scorer_options": {"probes": 2, "augment": 1}},
    "res-probes-eot-notr": {"scorer": "resemblyzer", "scorer_options": {"probes": 3, "augment": 1, "transcript": False}},
    "ecapa": {"scorer": "ecapa", "scorer_options": {"probes": 0, "augment": 0}},
    "ecapa-probes-eot": {"scorer": "ecapa", "scorer_options": {"probes": 2, "augment": 1}},
    "ecapa-probes-eot-notr": {"scorer": "ecapa", "scorer_options": {"probes": 3, "augment": 1, "transcript": False}},
    # fewer chains: the same evaluations buy more Adam steps (8 chains: ~40 steps in 320 evaluations; 2 chains: ~150)
    "res-c2": {"scorer": "resemblyzer", "scorer_options": {"probes": 0, "augment": 0}, "strategy": "gradient", "strategy_options": {"chains": 2}},
    "ecapa-c2": {"scorer": "ecapa", "scorer_options": {"probes": 0, "augment": 0}, "strategy": "gradient", "strategy_options": {"chains": 2}},
    # the held-out closure was still rising at 640 evaluations: do bigger steps or a wider trust region get there sooner?
    "ecapa-lr2": {"scorer": "ecapa", "scorer_options": {"probes": 0, "augment": 0}, "strategy": "gradient", "strategy_options": {"lr": 0.1}},
    "ecapa-r3": {"scorer": "ecapa", "scorer_options": {"probes": 0, "augment": 0}, "strategy": "gradient", "strategy_options": {"radius": 3.0}},
    # pitch as its own objective (scorers/pitch.py): the harmonic source gets no gradient, so embedding objectives
    # leave the clones 1-7 semitones off; 1 semitone off costs 1/12 (weight 1) or 1/40 (weight 0.3)
    "ecapa-pitch": {"scorer": "compose:ecapa+pitch", "strategy": "gradient"},
    "ecapa-pitch03": {"scorer": "compose:ecapa+0.3*pitch", "strategy": "gradient"},
    "res-pitch": {"scorer": "compose:resemblyzer+pitch", "strategy": "gradient"},
    # two embedders as the objective (what only one of them hears does not pay), judged by the third (CAM++)
    "ecapa-res": {"scorer": "compose:ecapa+resemblyzer", "strategy": "gradient"},
    "ecapa-res-pitch": {"scorer": "compose:ecapa+resemblyzer+pitch", "strategy": "gradient"},
}


def lead_judge(held_out: list[str]) -> str:
    return next((j for j in HEADLINE_ORDER if j in held_out), HEADLINE_ORDER[0])


def optimized_judges(scorer: str) -> set[str]:
    return {j for j in JUDGES if j in scorer}


# ---------------------------------------------------------------- targets
def devset_targets(folder: Path, only: list[str] | None) -> list[dict[str, Any]]:
    out = []
    for clip in sorted(folder.glob("*.flac")):
        if only and clip.stem not in only:
            continue
        out.append({"name": clip.stem, "kind": "devset", "path": clip,
                    "text": clip.with_suffix(".txt").read_text(encoding="utf-8").strip()})
    return out


def loo_targets(names: list[str], renderer: Any, stock: StockVoices, folder: Path) -> list[dict[str, Any]]:
    out = []
    for name in names:
        pack = stock.packs[stock.names.index(name)]
        with torch.no_grad():
            audio = renderer.render(pack[None].to(renderer.device), SEARCH_TEXT)
        path = folder / f"{name}.wav"
        sf.write(path, audio.item(0).float().cpu().numpy(), renderer.sample_rate)
        out.append({"name": name, "kind": "loo", "path": path, "text": SEARCH_TEXT, "pack": pack})
    return out


def english(stock: StockVoices, hidden: str | None) -> StockVoices:
    keep = [n for n in stock.names if n[:2] in ("af", "am", "bf", "bm") and n != hidden]
    return stock.without(*[n for n in stock.names if n not in keep])


# ---------------------------------------------------------------- judging
class Judge:
    def __init__(self, names: tuple[str, ...], renderer: Any, device: str):
        self.renderer, self.device = renderer, device
        self.scorers = {n: registry.get("scorers", n)(device=device) for n in names}
        self.dnsmos = registry.get("scorers", "dnsmos")(device=device)

    def renders(self, packs: torch.Tensor, texts: list[str], batch: int = 16) -> list[list[Any]]:
        """[text][chunk] AudioBatch of packs speaking each judge text."""
        return [[self.renderer.render(chunk.to(self.renderer.device), t) for chunk in packs.split(batch)] for t in texts]

    def prepare(self, target: TargetSpeech) -> dict[str, Any]:
        return {name: scorer.prepare(target) for name, scorer in self.scorers.items()}

    def similarities(self, audio: list[list[Any]], states: dict[str, Any]) -> dict[str, torch.Tensor]:
        """{judge: (N,)} cosine to the target clip (prepared), mean over texts."""
        out = {}
        for name, scorer in self.scorers.items():
            state = states[name]
            per_text = [torch.cat([scorer.similarity(a, state).total.float().cpu() for a in chunks]) for chunks in audio]
            out[name] = torch.stack(per_text).mean(0)
        return out

    def mos(self, audio: list[list[Any]]) -> torch.Tensor:
        """(N,) DNSMOS OVRL, mean over texts."""
        return torch.stack([torch.cat([self.dnsmos.mos(a)["ovrl"].float().cpu() for a in chunks]) for chunks in audio]).mean(0)

    def halves(self, clip: torch.Tensor, rate: int) -> dict[str, float]:
        """Each judge's similarity between the first and second half of a real clip (the ceiling), as `evaluate` has it."""
        target = TargetSpeech([clip], [""], rate)
        return {name: half_similarity(scorer, target) for name, scorer in self.scorers.items()}


# ---------------------------------------------------------------- one clone
class Milestones(Callback):
    """Keeps the best voice so far each time the evaluations pass a milestone: one search gives the
    time-to-quality curve (the search itself is not changed)."""

    def __init__(self, at: list[int]):
        self.pending, self.snapshots = sorted(at), []

    def on_step(self, search: Any, x: torch.Tensor, result: Any, improved: bool) -> None:
        p = search.progress
        while self.pending and p.evals >= self.pending[0]:
            self.snapshots.append({"milestone": self.pending.pop(0), "evals": p.evals, "search_seconds": round(p.elapsed, 2),
                                   "search_best": p.best_score, "pack": p.best_pack.clone()})


def judge_pack(pack: torch.Tensor, judge: "Judge", states: dict[str, Any], stock_sim: dict[str, torch.Tensor],
               ceiling: dict[str, float], stock: StockVoices) -> tuple[dict[str, Any], float]:
    audio = judge.renders(pack[None], JUDGE_TEXTS)
    sim = judge.similarities(audio, states)
    judges = {}
    for name in judge.scorers:
        best = int(stock_sim[name].argmax())
        floor, clone = float(stock_sim[name][best]), float(sim[name][0])
        judges[name] = {"floor": floor, "floor_voice": stock.names[best], "clone": clone, "ceiling": ceiling[name],
                        "closure": (clone - floor) / (ceiling[name] - floor) if ceiling[name] > floor else None}
    return judges, float(judge.mos(audio)[0])


def clone_config(method: str, target: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    spec = METHODS[method]
    config = make_config(target={"paths": [str(target["path"])], "texts": [target["text"]], "max_seconds": 600.0},
                         device=args.device, seed=args.seed, budget={"steps": None, "evals": args.evals, "seconds": None},
                         exclude_voices=[target["name"]] if target["kind"] == "loo" else [],
                         renderer={"name": args.renderer, "options": renderer_options(args)},
                         plugins=list(args.plugin or []))
    if args.batch_size:
        config["batch_size"] = args.batch_size
    if args.score_seconds:
        config["score_seconds"] = args.score_seconds
    if "scorer" in spec:
        config["scorer"] = {"name": spec["scorer"], "options": dict(spec.get("scorer_options", {}))}
    if "strategy" in spec:
        config["strategy"] = {"name": spec["strategy"], "options": dict(spec.get("strategy_options", {}))}
    elif spec.get("strategy_options"):
        config["strategy"]["options"] = dict(spec["strategy_options"])
    return config


def renderer_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"weights": args.weights, **({"checkpoint": True} if args.grad_checkpoint else {})}


def run_one(method: str, target: dict[str, Any], args: argparse.Namespace, renderer: Any, judge: Judge,
            stock_all: StockVoices, stock_cache: dict[str, Any]) -> dict[str, Any]:
    config = clone_config(method, target, args)
    t0 = time.perf_counter()
    parts = build(config, renderer=renderer)
    config = parts.config or config  # `auto` strategy and space made concrete
    milestones = Milestones([m for m in args.milestones if m < args.evals])
    parts.search.callbacks.append(milestones)
    progress = parts.search.run()
    sync(args.device)
    seconds = time.perf_counter() - t0
    clip_target = TargetSpeech([parts.target.clips[0]], [target["text"]], parts.target.sample_rate)
    hidden = target["name"] if target["kind"] == "loo" else None
    stock = english(stock_all, hidden)
    key = hidden or ""
    if key not in stock_cache:  # renders of the stock voices do not depend on the target: once per hidden voice
        audio = judge.renders(stock.packs, JUDGE_TEXTS)
        stock_cache[key] = {"audio": audio, "mos": judge.mos(audio)}
    stock_audio, stock_mos = stock_cache[key]["audio"], stock_cache[key]["mos"]
    states = judge.prepare(clip_target)
    stock_sim = judge.similarities(stock_audio, states)
    if target["kind"] == "loo":
        ceiling = {k: float(v[0]) for k, v in judge.similarities(judge.renders(target["pack"][None], JUDGE_TEXTS), states).items()}
    else:
        ceiling = judge.halves(clip_target.clips[0], clip_target.sample_rate)
    judges, clone_mos = judge_pack(progress.voice, judge, states, stock_sim, ceiling, stock)  # the search's answer
    curve = []
    for snap in milestones.snapshots:
        snap_judges, snap_mos = judge_pack(snap.pop("pack"), judge, states, stock_sim, ceiling, stock)
        curve.append({**snap, "judges": {k: {"clone": v["clone"], "closure": v["closure"]} for k, v in snap_judges.items()},
                      "dnsmos": snap_mos})
    curve.append({"milestone": args.evals, "evals": progress.evals, "search_seconds": round(progress.elapsed, 2), "search_best": progress.best_score,
                  "judges": {k: {"clone": v["clone"], "closure": v["closure"]} for k, v in judges.items()}, "dnsmos": clone_mos})
    others = chain_means(parts.search)
    if progress.favorite_pack is not None:  # the strategy answered with another voice than its best scored one
        others["best-scored"] = (progress.best_pack, progress.best_score)
    consensus = {name: dict(zip(("judges", "dnsmos"), judge_pack(pack, judge, states, stock_sim, ceiling, stock)),
                            objective=objective) for name, (pack, objective) in others.items()}
    floor_voice = judges[next(iter(judges))]["floor_voice"]
    return {
        "target": target["name"], "kind": target["kind"], "method": method,
        "resolved": {"strategy": config["strategy"]["name"], "space": config["space"]["name"],
                     "scorer": config["scorer"]["name"], "scorer_options": config["scorer"]["options"],
                     "strategy_options": config["strategy"].get("options", {})},
        "optimizes": sorted(optimized_judges(config["scorer"]["name"])),
        "judges": judges,
        "dnsmos": {"clone": clone_mos, "floor_voice": float(stock_mos[stock.names.index(floor_voice)]),
                   "stock_mean": float(stock_mos.mean())},
        "search_best": progress.best_score, "evals": progress.evals, "search_seconds": round(progress.elapsed, 2),
        "wall_seconds": round(seconds, 2), "score_seconds": config.get("score_seconds"), "curve": curve,
        "consensus": consensus,
        "answer_score": progress.favorite_score, "pack": progress.voice,
    }


def chain_means(search: Any) -> dict[str, tuple[torch.Tensor, float]]:
    """Voices that cost no search: the mean, in the space, of the gradient chains' final points — of the best
    `k` by the objective (`mean-top2`, `mean-top4`) and of all (`mean-all`) — with the objective's score of each.
    Chains that reach the target by different routes share what is the speaker's and differ in what only the
    objective's embedder hears; averaging keeps the first. Empty for strategies without chains."""
    strategy = search.strategy
    if getattr(strategy, "z", None) is None or getattr(strategy, "x_start", None) is None:
        return {}
    x = strategy.propose().float()
    _, result = search.evaluate(x, grad=False)
    order = result.total.float().cpu().argsort(descending=True)
    out = {}
    for k in sorted({2, 4, len(order)}):
        if k > len(order) or k < 2:
            continue
        mean = x[order[:k]].mean(0, keepdim=True)
        packs, scored = search.evaluate(mean, grad=False)
        out["mean-all" if k == len(order) else f"mean-top{k}"] = (packs[0].float().cpu(), float(scored.total[0]))
    return out


def answered_by(row: dict[str, Any], name: str) -> dict[str, Any]:
    """A row of a run made before the gradient strategy answered with a chain mean, as that strategy answers:
    the judged voice becomes the row's `consensus[name]` (e.g. mean-top4, which the run judged from the same
    chains: see `chain_means`), and the voice it judged becomes `consensus["best-scored"]`. Rows unchanged for ''."""
    if not name:
        return row
    mean = row["consensus"][name]
    best = {"judges": row["judges"], "dnsmos": row["dnsmos"]["clone"], "objective": row["search_best"]}
    row = dict(row, answer=name, answer_score=mean["objective"], judges=mean["judges"],
               dnsmos=dict(row["dnsmos"], clone=mean["dnsmos"]),
               consensus={**{k: v for k, v in row["consensus"].items() if k != name}, "best-scored": best})
    last = dict(row["curve"][-1], answer=name, dnsmos=mean["dnsmos"],
                judges={k: {"clone": v["clone"], "closure": v["closure"]} for k, v in mean["judges"].items()})
    row["curve"] = row["curve"][:-1] + [last]
    row["resolved"] = dict(row["resolved"], strategy_options={**row["resolved"].get("strategy_options", {}),
                                                              "average": int(name.removeprefix("mean-top"))})
    return row


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


# ---------------------------------------------------------------- summary
def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        entry: dict[str, Any] = {"optimizes": mine[0]["optimizes"], "resolved": mine[0]["resolved"],
                                 "answer": mine[0].get("answer") or ("strategy's favorite" if mine[0].get("answer_score")
                                                                     is not None else "best scored voice")}
        for kind in ("devset", "loo"):
            part = [r for r in mine if r["kind"] == kind]
            if not part:
                continue
            judged = [j for j in JUDGES if all(j in r["judges"] for r in part)]  # older rows: two judges
            held_out = [j for j in judged if j not in mine[0]["optimizes"]]
            sub: dict[str, Any] = {"targets": len(part)}
            for j in judged:
                closures = [r["judges"][j]["closure"] for r in part if r["judges"][j]["closure"] is not None]
                sub[j] = {"held_out": j in held_out,
                          "mean_closure": round(statistics.fmean(closures), 4) if closures else None,
                          "median_closure": round(statistics.median(closures), 4) if closures else None,
                          "below_floor": sum(r["judges"][j]["clone"] < r["judges"][j]["floor"] for r in part)}
            clone_mos = statistics.fmean(r["dnsmos"]["clone"] for r in part)
            stock_mos = statistics.fmean(r["dnsmos"]["stock_mean"] for r in part)
            sub["dnsmos_clone"], sub["dnsmos_stock"] = round(clone_mos, 3), round(stock_mos, 3)
            sub["dnsmos_guard_ok"] = clone_mos >= stock_mos - 0.1
            sub["seconds_per_target"] = round(statistics.fmean(r["wall_seconds"] for r in part), 1)
            sub["evals"] = round(statistics.fmean(r["evals"] for r in part))
            sub["search_seconds_per_target"] = round(statistics.fmean(r["search_seconds"] for r in part), 1)
            sub["score_seconds"] = part[0].get("score_seconds")
            sub["curve"] = curve_summary(part, held_out)
            sub["consensus"] = consensus_summary(part, held_out)
            entry[kind] = sub
        out[method] = entry
    return out


def curve_summary(rows: list[dict[str, Any]], held_out: list[str]) -> list[dict[str, Any]]:
    """Per milestone (evaluations): seconds of search, held-out mean/median closure, below floor, DNSMOS."""
    points = []
    milestones = sorted({c["milestone"] for r in rows for c in r.get("curve", [])})
    for m in milestones:
        at = [next(c for c in r["curve"] if c["milestone"] == m) for r in rows if any(c["milestone"] == m for c in r.get("curve", []))]
        point: dict[str, Any] = {"evals": m, "targets": len(at),
                                 "search_seconds": round(statistics.fmean(c["search_seconds"] for c in at), 1),
                                 "dnsmos_clone": round(statistics.fmean(c["dnsmos"] for c in at), 3)}
        for j in held_out:
            closures = [c["judges"][j]["closure"] for c in at if c["judges"][j]["closure"] is not None]
            point[j] = {"mean_closure": round(statistics.fmean(closures), 4) if closures else None,
                        "median_closure": round(statistics.median(closures), 4) if closures else None,
                        "below_floor": sum(c < 0 for c in closures)}
        points.append(point)
    return points


def consensus_summary(rows: list[dict[str, Any]], held_out: list[str]) -> dict[str, Any]:
    """Per chain mean (see `chain_means`): held-out mean/median closure, below floor, DNSMOS, objective."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(k for r in rows for k in r.get("consensus", {})):
        at = [r["consensus"][name] for r in rows if name in r.get("consensus", {})]
        point: dict[str, Any] = {"targets": len(at), "dnsmos_clone": round(statistics.fmean(c["dnsmos"] for c in at), 3),
                                 "objective": round(statistics.fmean(c["objective"] for c in at), 4)}
        for j in held_out:
            closures = [c["judges"][j]["closure"] for c in at if c["judges"][j]["closure"] is not None]
            point[j] = {"mean_closure": round(statistics.fmean(closures), 4) if closures else None,
                        "median_closure": round(statistics.median(closures), 4) if closures else None,
                        "below_floor": sum(c["judges"][j]["clone"] < c["judges"][j]["floor"] for c in at)}
        out[name] = point
    return out


def headline(summary: dict[str, Any], method: str = "default") -> dict[str, Any] | None:
    """The issue's `default` entry: the default method's closure on the dev set under its held-out judge."""
    entry = summary.get(method, {}).get("devset")
    if not entry:
        return None
    j = lead_judge([k for k in JUDGES if k in entry and entry[k]["held_out"]])
    return {"judge": j, "mean_closure": entry[j]["mean_closure"], "median_closure": entry[j]["median_closure"],
            "below_floor": entry[j]["below_floor"], "dnsmos_guard_ok": entry["dnsmos_guard_ok"],
            "dnsmos_clone": entry["dnsmos_clone"], "dnsmos_stock": entry["dnsmos_stock"],
            "seconds_per_target": entry["seconds_per_target"], "search_seconds_per_target": entry["search_seconds_per_target"],
            "evals": entry["evals"], "score_seconds": entry["score_seconds"], "resolved": summary[method]["resolved"]}


def write(path: Path, rows: list[dict[str, Any]], meta: dict[str, Any], default_method: str = "default") -> dict[str, Any]:
    summary = summarize(rows)
    default = headline(summary, default_method)
    if default is not None:
        default["method"] = default_method
    report = {**meta, "protocol": __doc__.split("\n\n")[1], "judge_texts": JUDGE_TEXTS, "search_text_loo": SEARCH_TEXT,
              "default": default, "summary": summary, "rows": rows}
    atomic_write_bytes(path, (json.dumps(report, indent=1) + "\n").encode())
    return report


def meta(args: argparse.Namespace) -> dict[str, Any]:
    cuda = torch.cuda.is_available() and str(args.device).startswith("cuda")
    return {"device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
            "torch": torch.__version__, "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "evals": args.evals}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="default", help=f"comma list of {', '.join(METHODS)}")
    p.add_argument("--devset", default=os.environ.get("VOICESEARCH_DEVSET", str(Path(__file__).resolve().parents[2] / "shared/data/devset")))
    p.add_argument("--speakers", help="comma list of dev-set clip stems (default: all)")
    p.add_argument("--loo", default=LOO_TARGETS, help="hidden stock voices ('' for none)")
    p.add_argument("--no-devset", action="store_true")
    p.add_argument("--evals", type=int, default=480)
    p.add_argument("--judges", default=",".join(JUDGES), help="speaker embedders that judge every clone")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, help="population size (default: the CLI's)")
    p.add_argument("--renderer", default="kokoro")
    p.add_argument("--weights", default="auto")
    p.add_argument("--plugin", action="append")
    p.add_argument("--grad-checkpoint", action="store_true",
                   help="recompute the generator in the backward pass (less GPU memory: several processes share a GPU)")
    p.add_argument("--score-seconds", type=float, help="candidates speak only the first ~N s of the transcript while scored")
    p.add_argument("--milestones", default="", help="comma list of evaluation counts at which the best voice so far is "
                   "judged too (the time-to-quality curve)")
    p.add_argument("--save-packs", help="also write every clone's voice pack (float16) into this .npz file")
    p.add_argument("--out", required=True)
    p.add_argument("--merge", nargs="*", help="merge these result files into --out, then exit")
    p.add_argument("--note", help="with --merge: a note on how the runs were made (kept in the JSON)")
    p.add_argument("--default-method", default="default", help="with --merge: the method whose rows ran with the settings "
                   "`voicesearch clone` uses by default (its summary becomes the `default` entry)")
    p.add_argument("--write-phonemes", help="phonemize every text needed into this JSON file, then exit")
    args = p.parse_args(argv)
    args.milestones = [int(m) for m in args.milestones.split(",") if m]
    out = Path(args.out)
    if args.merge is not None:
        rows, parts = [], []
        for f in args.merge:  # FILE, FILE=NEW_METHOD_NAME or FILE=NEW_METHOD_NAME@CHAIN_MEAN (see `answered_by`)
            path, _, rename = f.partition("=")
            rename, _, answer = rename.partition("@")
            data = json.loads(Path(path).read_text())
            parts.append(data)
            rows += [answered_by(dict(r, method=rename or r["method"]), answer) for r in data["rows"]]
        merged = {k: parts[0][k] for k in ("device", "torch", "python", "date")}
        merged["command"] = [d["command"] for d in parts]
        if args.note:
            merged["note"] = args.note
        return write(out, rows, merged, args.default_method)
    if args.write_phonemes:
        from scorers.embedding import PROBE_TEXTS
        from voicesearch.kokoro.g2p import phonemize
        from voicesearch.session import HELD_OUT_TEXT

        texts = [SEARCH_TEXT, HELD_OUT_TEXT, *JUDGE_TEXTS, *PROBE_TEXTS]
        texts += [t["text"] for t in devset_targets(Path(args.devset), None)]
        texts += [leading_text(t, s) for t in list(texts) for s in (4, 5, 6, 8)]  # --score-seconds cuts
        table = {t: phonemize(t, "a") for t in dict.fromkeys(texts)}
        atomic_write_bytes(Path(args.write_phonemes), (json.dumps(table, indent=1, ensure_ascii=False) + "\n").encode())
        print(f"wrote phonemes of {len(table)} texts to {args.write_phonemes}")
        return {}
    for plugin in args.plugin or []:
        registry.load_plugin(plugin)
    args.device = resolve_device(args.device)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    renderer = build_renderer(make_config(device=args.device, renderer={"name": args.renderer, "options": renderer_options(args)}))
    folder = voices_folder_from_env()
    stock_all = StockVoices.from_folder(folder) if folder else renderer.stock_voices()
    judge = Judge(tuple(j for j in args.judges.split(",") if j), renderer, args.device)
    tmp = Path(tempfile.mkdtemp(prefix="clone_quality_"))
    targets = [] if args.no_devset else devset_targets(Path(args.devset), args.speakers.split(",") if args.speakers else None)
    targets += loo_targets([n for n in args.loo.split(",") if n], renderer, stock_all, tmp)
    rows: list[dict[str, Any]] = []
    stock_cache: dict[str, Any] = {}
    packs: dict[str, np.ndarray] = {}
    for method in methods:
        for target in targets:
            row = run_one(method, target, args, renderer, judge, stock_all, stock_cache)
            packs[f"{method}__{target['name']}"] = row.pop("pack").numpy().astype(np.float16)
            if args.save_packs:  # the clones themselves, for listening and analysis off the GPU
                with open(args.save_packs, "wb") as f:
                    np.savez_compressed(f, **packs)
            rows.append(row)
            j = lead_judge([k for k in row["judges"] if k not in row["optimizes"]])
            r = row["judges"][j]
            print(f"{method:>18} {target['name']:>22} {j}: floor {r['floor']:.3f} clone {r['clone']:.3f} ceil "
                  f"{r['ceiling']:.3f} closure {r['closure'] if r['closure'] is None else round(r['closure'], 3)} "
                  f"dnsmos {row['dnsmos']['clone']:.2f}/{row['dnsmos']['stock_mean']:.2f} {row['wall_seconds']:.0f}s",
                  flush=True)
            write(out, rows, meta(args))
    return write(out, rows, meta(args))


if __name__ == "__main__":
    main()
