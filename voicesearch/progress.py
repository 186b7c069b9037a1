"""A rich progress bar for the search: ETA, best score, evaluations per second."""
from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .loop import Callback, Search
from .types import ScoreResult


class ProgressBar(Callback):
    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.bar: Progress | None = None

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
            TextColumn("best [green]{task.fields[best]}"), TextColumn("{task.fields[rate]} evals/s"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, transient=False,
        )
        self.bar.start()
        done, total = self._measure(search)
        self.task = self.bar.add_task(type(search.strategy).name or "search", total=total, completed=done,
                                      best="-", rate="-")

    def on_step(self, search: Search, x, result: ScoreResult, improved: bool) -> None:
        p = search.progress
        done, _ = self._measure(search)
        rate = p.evals / p.elapsed if p.elapsed > 0 else 0.0
        self.bar.update(self.task, completed=done, best=f"{p.best_score:.4f}", rate=f"{rate:.1f}")

    def on_end(self, search: Search, interrupted: bool) -> None:
        if self.bar:
            self.bar.stop()
