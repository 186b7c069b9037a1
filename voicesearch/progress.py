"""A rich progress bar for the search: ETA, best score, speed; and, when evaluations are slow (a CPU), an
estimate of the whole run's time after its first step."""
from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .loop import Callback, Search
from .types import ScoreResult

SLOW_EVAL_SECONDS = 2.0  # slower than this, speed reads as seconds per evaluation (not "0.0 evals/s")
ESTIMATE_ABOVE_SECONDS = 60.0  # a run expected to take longer than this gets a time estimate after its first step


def rate_text(evals: int, seconds: float) -> str:
    """`12.3 evals/s`, or `4.1 s/eval` when an evaluation takes longer than SLOW_EVAL_SECONDS."""
    if evals <= 0 or seconds <= 0:
        return "-"
    per = seconds / evals
    return f"{per:.1f} s/eval" if per > SLOW_EVAL_SECONDS else f"{evals / seconds:.1f} evals/s"


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def estimate_line(search: Search, per_eval: float) -> str | None:
    """What the rest of the budget will take at `per_eval` seconds per evaluation (None for a short run)."""
    b, p = search.budget, search.progress
    batch = max(1, int(getattr(search.strategy, "batch_size", 1)))
    bounds = []  # (seconds, evaluations) each budget allows; the search stops at the first
    if b.evals is not None:
        bounds.append(((b.evals - p.evals) * per_eval, b.evals - p.evals))
    if b.steps is not None:
        bounds.append(((b.steps - p.step) * batch * per_eval, (b.steps - p.step) * batch))
    if b.seconds is not None:
        left = max(0.0, b.seconds - p.elapsed)
        bounds.append((left, int(left / per_eval)))
    if not bounds:
        return None
    seconds, evals = min(bounds)
    if seconds < ESTIMATE_ABOVE_SECONDS:
        return None
    line = f"about {per_eval:.1f} s per evaluation here: the rest of the budget is ~{max(0, evals)} evaluations, ~{_minutes(seconds)}"
    ranking = _ranking_left(search)
    if ranking and ranking >= evals:
        if b.evals is None and b.steps is None:  # else `ranking_note` said so before the start
            line += (f"; it ends while ranking the {len(search.strategy.stock)} stock voices, so the result will be the "
                     f"best stock voice: give more than ~{_minutes(ranking * per_eval)} (--seconds) or --evals above {ranking}")
    elif ranking:
        line += f", of which ranking the stock voices ~{_minutes(ranking * per_eval)}"
    return line


def _ranking_left(search: Search) -> int:
    """Stock voices the strategy's opening has still to score (0 when it ranks none or is past it)."""
    s = search.strategy
    if not getattr(s, "needs_ranking", False) or getattr(s, "started", True) or getattr(s, "warm_points", None) is not None:
        return 0
    return max(0, len(s.stock) - int(getattr(s, "rank_pos", 0)))


def ranking_note(search: Search) -> str | None:
    """A line when the evaluation (or step) budget ends before the strategy gets past ranking the stock voices."""
    ranking, b, p = _ranking_left(search), search.budget, search.progress
    if not ranking:
        return None
    batch = max(1, int(getattr(search.strategy, "batch_size", 1)))
    left = [n for n in ((None if b.evals is None else b.evals - p.evals),
                        (None if b.steps is None else (b.steps - p.step) * batch)) if n is not None]
    if not left or min(left) > ranking:
        return None
    return (f"note: the budget ({min(left)} evaluations) ends while ranking the {len(search.strategy.stock)} stock voices: "
            f"the result will be the best stock voice, not a new one; give --evals above {ranking}")


class ProgressBar(Callback):
    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.bar: Progress | None = None
        self._start = (0, 0.0)
        self._estimated = False

    def _measure(self, search: Search) -> tuple[float, float]:
        b, p = search.budget, search.progress
        if b.evals is not None:
            return p.evals, b.evals
        if b.steps is not None:
            return p.step, b.steps
        return p.elapsed, b.seconds or 0.0

    def on_start(self, search: Search) -> None:
        unit = "evals" if search.budget.evals is not None else "steps" if search.budget.steps is not None else "s"
        self.bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
            TextColumn("best [green]{task.fields[best]}"), TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, transient=False,
        )
        self.bar.start()
        done, total = self._measure(search)
        self._start, self._estimated = (search.progress.evals, search.progress.elapsed), False
        self.task = self.bar.add_task(type(search.strategy).name or "search", total=total, completed=done,
                                      best="-", rate="-")

    def on_step(self, search: Search, x, result: ScoreResult, improved: bool) -> None:
        p = search.progress
        done, _ = self._measure(search)
        evals, seconds = p.evals - self._start[0], p.elapsed - self._start[1]
        self.bar.update(self.task, completed=done, best=f"{p.best_score:.4f}", rate=rate_text(evals, seconds))
        if not self._estimated and evals > 0:
            self._estimated = True
            line = estimate_line(search, seconds / evals) if seconds / evals >= 1.0 else None
            if line:
                self.bar.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def on_end(self, search: Search, interrupted: bool) -> None:
        if self.bar:
            self.bar.stop()
