"""ReportRecorder: while a search runs, write what only the live search knows, then rebuild RUN/report.html.

The page itself (`voicesearch.report.build_report`) reads the run directory only. This callback adds the files
that only the running search can give, using its public parts (`Search.score_packs`, `progress`, `renderer`,
`target`, `strategy.known_stock_scores()`):

    RUN/samples/target_I.wav             the target clip(s) as the search heard them (demo targets are generated)
    RUN/samples/stock_best_target_text.wav   the best-scoring stock voice on the target text (once, at the end)
    RUN/stock_scores.json                every stock voice scored by the run's scorer once, at the end: the baseline
                                         (reusing the ranking a strategy did; skipped if it would more than double the run)
    RUN/trajectory.jsonl                 the best pack's mean style row (256 floats) at each checkpoint where the
                                         best changed; the stock-voice map projects these rows, so it can be recomputed
    RUN/report_assets/meta.json          renderer weights source, device, scorer texts
    RUN/report_assets/stock_styles.npz   mean style rows of the stock voices the map is drawn from
    RUN/report_assets/best_so_far.wav    the current best on the target text while running (removed at the end)
"""
from __future__ import annotations

import io
import json
import logging
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from . import report
from .loop import Callback, Search
from .report import ASSETS, MAX_TARGET_CLIPS, REPORT, STOCK_SCORES, TRAJECTORY, Figures, folder_stock, read_jsonl
from .run import read_config, rng_states, set_rng_states, write_json
from .types import ScoreResult
from .voice import atomic_write_bytes

log = logging.getLogger(__name__)

MIN_INTERVAL = 5.0  # seconds between page rebuilds at checkpoints...
COST_FACTOR = 10.0  # ...and at least 10x the last rebuild's cost, so the report takes <~10 % of a run


@contextmanager
def _rng_guard() -> Iterator[None]:
    """Renders for the report must not move the search's RNG streams (Kokoro's vocoder draws noise)."""
    state = rng_states()
    try:
        yield
    finally:
        set_rng_states(state)


def render_to(search: Search, pack: torch.Tensor, text: str, path: Path) -> None:
    """One voice pack (510, 256) speaking `text`, written to `path`; the search's RNG streams are left as they were."""
    from .audio import write_wav

    with torch.no_grad(), _rng_guard():
        audio = search.renderer.render(pack[None].to(search.renderer.device), text, speed=search.speed)
    write_wav(path, audio.item(0), audio.sample_rate)


def append_trajectory(search: Any, run_dir: Path, last_best_step: int | None = None) -> int | None:
    """Add the best pack's mean style row when the best changed; returns the recorded best step."""
    p = search.progress
    if p.best_pack is None:
        return last_best_step
    path = Path(run_dir) / TRAJECTORY
    if last_best_step is None:  # first call in this process: drop rows a resume went back past
        rows = read_jsonl(path)
        kept = [r for r in rows if r["step"] <= p.step]
        if len(kept) != len(rows):
            atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        last_best_step = kept[-1]["best_step"] if kept else None
    if last_best_step == p.best_step:
        return last_best_step
    row = {"step": p.step, "evals": p.evals, "seconds": round(p.elapsed, 3), "best": p.best_score,
           "best_step": p.best_step, "style": [round(float(v), 5) for v in p.best_pack.float().mean(0)]}
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
    return p.best_step


def _known_scores(search: Search, n: int) -> np.ndarray:
    """The stock scores the strategy's opening already paid for; NaN = unknown."""
    scores = search.strategy.known_stock_scores()
    if isinstance(scores, torch.Tensor) and scores.shape == (n,):
        return scores.detach().float().cpu().numpy().astype(np.float64)
    return np.full(n, np.nan)


def score_stock(search: Search, run_dir: Path, max_missing: int | None = None) -> dict[str, Any] | None:
    """Every stock voice the search may use, scored by the run's scorer (once per run): the baseline.

    Scores the strategy's opening already computed are reused; only the rest are rendered and scored
    here — unless more than `max_missing` are left: then there is no baseline (None).
    """
    path = Path(run_dir) / STOCK_SCORES
    if path.is_file():
        return json.loads(path.read_text())
    stock, batch = search.strategy.stock, max(1, int(search.strategy.batch_size))
    t0 = time.perf_counter()
    scores = _known_scores(search, len(stock))
    todo = np.flatnonzero(~np.isfinite(scores))
    if max_missing is not None and len(todo) > max_missing:
        return None
    with _rng_guard():
        for chunk in np.array_split(todo, max(1, math.ceil(len(todo) / batch))) if len(todo) else []:
            result: ScoreResult = search.score_packs(stock.packs[torch.from_numpy(chunk)])
            scores[chunk] = result.total.float().cpu().numpy()
    if not np.isfinite(scores).any():
        return None
    best = int(np.nanargmax(np.where(np.isfinite(scores), scores, np.nan)))
    data = {"scorer": type(search.scorer).__name__, "best": stock.names[best], "best_score": float(scores[best]),
            "scored_here": len(todo), "from_strategy": len(stock) - len(todo), "seconds": round(time.perf_counter() - t0, 2),
            "scores": {n: float(v) for n, v in zip(stock.names, scores) if np.isfinite(v)}}
    if search.target.text:
        render_to(search, stock.packs[best], search.target.text, Path(run_dir) / "samples" / "stock_best_target_text.wav")
    write_json(path, data)  # last: its presence means the baseline, sample included, is complete
    return data


def _write_target(search: Search, run_dir: Path) -> None:
    from .audio import write_wav

    for i, clip in enumerate(search.target.clips[:MAX_TARGET_CLIPS]):
        path = run_dir / "samples" / f"target_{i}.wav"
        if not path.is_file():
            write_wav(path, clip, search.target.sample_rate)


def _write_meta(search: Search, run_dir: Path) -> None:
    path = run_dir / ASSETS / "meta.json"
    r = search.renderer
    meta = {
        "renderer": type(r).__name__, "weights_source": getattr(r, "weights_source", None),
        "device": str(getattr(r, "device", "")), "sample_rate": getattr(r, "sample_rate", None),
        "scorer": type(search.scorer).__name__, "scorer_texts": list(search.texts),
        "transcripts": list(search.target.transcripts), "stock_voices": len(search.strategy.stock),
    }
    if not path.is_file() or json.loads(path.read_text()) != meta:
        write_json(path, meta)


def _write_stock_styles(search: Search, run_dir: Path, config: dict[str, Any]) -> None:
    """The map shows every voice of the voices folder (left-out ones marked); else the search's own stock."""
    path = run_dir / ASSETS / "stock_styles.npz"
    if path.is_file():
        return
    # the folder holds the voices left out of the search too (the demo's hidden ones): only then is it worth reading
    stock = (config.get("exclude_voices") and folder_stock(config)) or search.strategy.stock
    buf = io.BytesIO()
    np.savez(buf, names=np.array(stock.names), styles=stock.packs.mean(1).numpy().astype(np.float32))
    atomic_write_bytes(path, buf.getvalue())


class ReportRecorder(Callback):
    """Keeps RUN/report.html up to date: at checkpoints (every `checkpoint_every` steps, throttled so the report
    costs <~10 % of a run) and once at the end. Place it after the RunRecorder, whose final samples the last page
    plays. A failure is a logged warning: a report never stops a search."""

    def __init__(self, run_dir: Path, checkpoint_every: int = 10):
        self.dir = Path(run_dir)
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.figures = Figures()  # unchanged figures are not redrawn from one rebuild to the next
        self.last_end, self.last_cost = -math.inf, 0.0
        self.traj_best_step: int | None = None
        self.so_far_step: int | None = None
        self.seen_step: int | None = None  # the last step this run finished

    def on_step(self, search: Search, x: torch.Tensor, result: ScoreResult, improved: bool) -> None:
        self.seen_step = search.progress.step
        if search.progress.step % self.checkpoint_every == 0:
            self.refresh(search, final=False)

    def on_end(self, search: Search, interrupted: bool) -> None:
        if self.seen_step is None or search.progress.step != self.seen_step:
            return  # no whole step in this run, or progress past the last one seen
        if search.stop_reason not in (None, "interrupt") or search.progress.best_pack is None:
            return  # stopped mid-step: rendering may be what failed
        self.refresh(search, final=True)

    def _due(self) -> bool:
        return time.monotonic() - self.last_end >= max(MIN_INTERVAL, COST_FACTOR * self.last_cost)

    @staticmethod
    def _ending(search: Search) -> bool:
        """A checkpoint at the very end: the final refresh follows at once, so this one is skipped."""
        return bool(search.budget.spent(search.progress) or search.strategy.done() or search.stop_requested)

    def refresh(self, search: Search, final: bool) -> None:
        """Record the live files and rebuild the page (a checkpoint's refresh only when due). Never raises."""
        t0 = time.monotonic()
        try:
            if not final and (not self._due() or self._ending(search)):
                self.traj_best_step = append_trajectory(search, self.dir, self.traj_best_step)
                return
            try:
                self.record(search, final)
                report.build_report(self.dir, final=final, figures=self.figures)
            finally:
                self.last_end = time.monotonic()
                self.last_cost = self.last_end - t0
        except Exception as e:  # a report must never stop a search
            log.warning("report %s not refreshed: %s: %s", self.dir / REPORT, type(e).__name__, e)

    def record(self, search: Search, final: bool) -> None:
        """Write the files the page needs that only the live search can give."""
        config = read_config(self.dir)
        _write_target(search, self.dir)
        _write_meta(search, self.dir)
        _write_stock_styles(search, self.dir, config)
        self.traj_best_step = append_trajectory(search, self.dir, self.traj_best_step)
        p, so_far = search.progress, self.dir / ASSETS / "best_so_far.wav"
        if final:
            if p.best_pack is not None and search.target_state is not None:
                # the baseline may at most double a run's work, and a Ctrl-C'd run should stop fast
                score_stock(search, self.dir, 0 if search.stop_requested else max(p.evals, search.strategy.batch_size))
            so_far.unlink(missing_ok=True)
        elif (p.best_pack is not None and search.target.text and self.so_far_step != p.best_step
              and config.get("report_live_audio", True)):  # off on a CPU (voicesearch.cpu): a render of the whole transcript
            render_to(search, p.best_pack, search.target.text, so_far)
            self.so_far_step = p.best_step
