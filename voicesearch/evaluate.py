"""Judge a voice on held-out text: each judge's score for the voice and for the best stock voice.

    result = evaluate("runs/my-run", target, ["A held-out sentence."], ["ecapa", "resemblyzer", "dnsmos"],
                      renderer, stock, device="cuda")
    console.print(format_table(result))

Judges are scorers found by name (speaker judges give cosine to the target, dnsmos gives MOS). Each
judge scores renders of the held-out texts (its text 0 is replaced by each held-out text in turn; any
further texts it needs stay its own) and reports the mean over texts. Stock voices are rendered in
batches and ranked by the first judge; the best one is then scored by every judge for comparison.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from . import registry
from .config import HELD_OUT_TEXT
from .errors import InputError
from .renderer import Renderer, Renders
from .scorer import Scorer
from .stock import StockVoices
from .types import TargetSpeech
from .voice import as_pack, load_voice

RUN_VOICES = ("voice_final.pt", "voice_best.pt")
#: The default held-out sentences: those of benchmarks/clone_quality.py, so a user's numbers compare with docs/quality.md.
JUDGE_TEXTS = (HELD_OUT_TEXT, "A gentle breeze moved through the open window while the kettle began to sing in the kitchen.")


def load_candidate(voice: str | os.PathLike | torch.Tensor) -> tuple[str, torch.Tensor]:
    """(name, (510, 256) pack) from a pack tensor, a voice file or a run directory."""
    if isinstance(voice, torch.Tensor):
        return "voice", as_pack(voice)[:, 0, :]
    path = Path(voice)
    if path.is_dir():
        found = [path / f for f in RUN_VOICES if (path / f).is_file()]
        if not found:
            raise InputError(f"{path} holds no {' or '.join(RUN_VOICES)}: give a run directory with a saved voice, or a voice file")
        path = found[0]
    return str(path), load_voice(path)[:, 0, :]


class _Judges:
    """Scorers prepared once, scoring packs on held-out texts with renders shared between judges."""

    def __init__(self, names: list[str], target: TargetSpeech, renderer: Renderer, device: str | torch.device,
                 speed: float = 1.0):
        if not names:
            raise InputError("give at least one judge (a scorer name), e.g. --judge ecapa,resemblyzer,campplus,dnsmos")
        self.names = names
        self.scorers: list[Scorer] = [registry.get("scorers", n)(device=device) for n in names]
        self.states = [s.prepare(target) for s in self.scorers]
        self.target, self.renderer, self.speed = target, renderer, speed

    def score(self, packs: torch.Tensor, texts: list[str], judges: list[int]) -> dict[int, dict[str, torch.Tensor]]:
        """{judge index: {"total": (N, n_texts), part: (N, n_texts)}} for N packs."""
        packs = packs.to(self.renderer.device, torch.float32)
        out: dict[int, dict[str, list[torch.Tensor]]] = {j: {} for j in judges}
        for text in texts:
            shared: dict[tuple[str, ...], Renders] = {}
            for j in judges:
                scorer = self.scorers[j]
                own = [text] + scorer.texts(self.target)[1:]
                renders = shared.setdefault(tuple(own), Renders(self.renderer, packs, own, speed=self.speed))
                result = scorer.score(renders, self.states[j]).detach()
                for key, value in {"total": result.total, **result.parts}.items():
                    out[j].setdefault(key, []).append(value.float().cpu())
        return {j: {k: torch.stack(v, 1) for k, v in parts.items()} for j, parts in out.items()}


def _summary(name: str, judges: _Judges, scored: dict[int, dict[str, torch.Tensor]], row: int) -> dict[str, Any]:
    return {
        "name": name,
        "scores": {judges.names[j]: float(s["total"][row].mean()) for j, s in scored.items()},
        "per_text": {judges.names[j]: [float(v) for v in s["total"][row]] for j, s in scored.items()},
        "parts": {judges.names[j]: {k: float(v[row].mean()) for k, v in s.items() if k != "total"} for j, s in scored.items()},
    }


def half_similarity(scorer: Scorer, target: TargetSpeech) -> float | None:
    """The judge's similarity between the first and the second half of the target speech (same speaker, same
    session: the ceiling a clone can hope for), or None for a judge without a speaker embedder."""
    embedder = getattr(scorer, "embedder", None)
    if not hasattr(embedder, "embed_clips"):
        return None
    clip = torch.cat([c.reshape(-1) for c in target.clips])
    half = clip.shape[-1] // 2
    with torch.no_grad():
        a = embedder.embed_clips([clip[:half]], target.sample_rate)
        b = embedder.embed_clips([clip[half:]], target.sample_rate)
    return float((a @ b.T).squeeze())


def evaluate(voice_pack_or_run_dir: str | os.PathLike | torch.Tensor, target: TargetSpeech, texts: list[str],
             judges: list[str], renderer: Renderer, stock: StockVoices | None, device: str | torch.device = "cpu",
             batch_size: int = 8, speed: float = 1.0, top: int = 5, optimized: set[str] | None = None) -> dict[str, Any]:
    """Scores of the voice and of the best stock voice (by the first judge), JSON-ready; with stock voices also,
    per speaker judge, the clone-quality closure of docs/quality.md: floor = the best stock voice under that
    judge, ceiling = `half_similarity`, closure = (voice − floor) / (ceiling − floor). `optimized` names the
    scorers the voice was searched with: those judges are marked `held_out: false`."""
    texts = [t.strip() for t in texts if t and t.strip()]
    if not texts:
        raise InputError("give at least one held-out text to speak (--text '...')")
    name, pack = load_candidate(voice_pack_or_run_dir)
    judge = _Judges(list(judges), target, renderer, device, speed)
    every = list(range(len(judge.names)))
    with torch.no_grad():
        candidate = _summary(name, judge, judge.score(pack[None], texts, every), 0)
        result: dict[str, Any] = {"voice": name, "texts": texts, "judges": judge.names, "candidate": candidate,
                                  "best_stock": None, "stock_ranking": [], "delta": {}, "closure": {}}
        if stock is None or len(stock) == 0:
            return result
        chunks = [judge.score(stock.packs[i : i + batch_size], texts, every) for i in range(0, len(stock), max(1, batch_size))]
        scored = {j: {k: torch.cat([c[j][k] for c in chunks]) for k in chunks[0][j]} for j in every}
    means = {j: scored[j]["total"].mean(1) for j in every}  # (N,) per judge: mean over the held-out texts
    order = means[0].argsort(descending=True).tolist()
    best = order[0]
    result["best_stock"] = _summary(stock.names[best], judge, scored, best)
    result["stock_ranking"] = [{"name": stock.names[i], "score": float(means[0][i])} for i in order[:top]]
    result["delta"] = {n: candidate["scores"][n] - result["best_stock"]["scores"][n] for n in judge.names}
    for j, n in enumerate(judge.names):
        ceiling = half_similarity(judge.scorers[j], target)
        if ceiling is None:
            continue
        i = int(means[j].argmax())
        floor, voice = float(means[j][i]), candidate["scores"][n]
        result["closure"][n] = {"voice": voice, "floor": floor, "floor_voice": stock.names[i], "ceiling": ceiling,
                                "closure": (voice - floor) / (ceiling - floor) if ceiling > floor else None,
                                "held_out": None if optimized is None else n not in optimized}
    return result


def format_table(result: dict[str, Any]):
    """A rich Table: one row per judge, the voice next to the best stock voice, and the closure where known."""
    from rich.table import Table

    stock, closure = result.get("best_stock"), result.get("closure") or {}
    table = Table(title=f"evaluate: {result['voice']}", caption=f"{len(result['texts'])} held-out text(s); "
                  f"best stock voice by {result['judges'][0]}" + ("; closure = (voice − best stock under that judge) / "
                                                                  "(half vs half of the target − that floor)" if closure else ""))
    table.add_column("judge")
    table.add_column("voice", justify="right")
    if stock:
        table.add_column(f"best stock ({stock['name']})", justify="right")
        table.add_column("Δ", justify="right")
    if closure:
        table.add_column("floor (voice)", justify="right")
        table.add_column("ceiling", justify="right")
        table.add_column("closure", justify="right")
    for name in result["judges"]:
        row = [name, f"{result['candidate']['scores'][name]:.4f}"]
        if stock:
            delta = result["delta"][name]
            row += [f"{stock['scores'][name]:.4f}", f"[{'green' if delta >= 0 else 'red'}]{delta:+.4f}[/]"]
        if closure:
            c = closure.get(name)
            if c is None:
                row += ["", "", ""]
            else:
                value = "n/a" if c["closure"] is None else f"{100 * c['closure']:+.0f}%"
                flag = {True: " held out", False: " optimized", None: ""}[c["held_out"]]
                row += [f"{c['floor']:.4f} ({c['floor_voice']})", f"{c['ceiling']:.4f}", value + flag]
        table.add_row(*row)
    return table


def optimized_scorers(run_dir: str | os.PathLike) -> set[str] | None:
    """The scorer names a run directory's search optimized (every name inside a compose spec), or None."""
    import json
    import re

    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return None
    try:
        spec = str(json.loads(path.read_text())["scorer"]["name"])
    except (ValueError, KeyError, TypeError):
        return None
    return set(re.findall(r"[A-Za-z][\w.-]*", spec.split(":", 1)[-1])) | {spec}
