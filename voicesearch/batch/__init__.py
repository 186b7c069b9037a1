"""`voicesearch batch`: clone many voices (a folder or a manifest of targets, optionally a grid of strategies and
scorers) on Ray — a local Ray by default, a cluster by address — with one worker per GPU that keeps its models
loaded, a resumable batch folder, and a summary of every run.

    from voicesearch.batch import Settings, start, resume
    outcome = start(Path("speakers/"), Settings(strategies=["auto"], scorers=["resemblyzer"], evals=500), Path("runs/cast"))
    outcome = resume(Path("runs/cast"))

Modules: targets (reading TARGETS), plan (jobs, batch.json, the lock), worker (the Ray actor), driver (Ray, the
queue, retries, progress), summary (summary.tsv/json, index.html). Only the driver imports Ray, when a batch runs.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from ..errors import InputError
from .plan import (RUNS, BatchLock, Settings, check_settings, defaults_device, make_jobs, new_plan, read_plan, to_run,
                   write_plan)
from .targets import Target, read_targets

__all__ = ["Settings", "Target", "default_folder", "plan_jobs", "read_targets", "resume", "start"]


def default_folder() -> Path:
    return Path("runs") / f"batch-{time.strftime('%Y%m%d-%H%M%S')}"


def plan_jobs(source: Path, settings: Settings, device: str | None = None,
              notes: list[str] | None = None) -> list[dict[str, Any]]:
    """Read and check the targets and settings; the jobs a batch would run, with the defaults of `device` (default:
    `defaults_device(settings.device)`) for what the settings leave unset. Writes nothing."""
    check_settings(settings)
    return make_jobs(read_targets(source), settings, device, notes)


def start(source: Path, settings: Settings, folder: Path | None = None, *, address: str | None = None,
          workers: int | None = None, retries: int = 1, console: Console | None = None) -> dict[str, Any]:
    """A new batch in `folder` (which must be new or empty): everything is checked before it is created."""
    from .driver import import_ray, run_batch

    check_settings(settings)
    targets = read_targets(source)
    device, notes = defaults_device(settings.device), []
    jobs = make_jobs(targets, settings, device, notes)
    import_ray()  # a missing Ray is said before any folder is made
    folder = Path(folder or default_folder())
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InputError(f"batch folder {folder} already exists and is not empty; continue it with "
                         f"`voicesearch batch --resume {folder}` or pick another --out")
    made = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create batch folder {folder} ({e.strerror}); pick a writable --out") from None
    lock = BatchLock(folder).acquire()
    try:
        plan = new_plan(jobs, str(Path(source).resolve()), settings, device, notes)
        plan["run_options"] = {"workers": workers, "address": address}  # the defaults of a later --resume
        write_plan(folder, plan)

        def workers_device(plan: dict[str, Any], device: str) -> list[dict[str, Any]]:
            """Where the workers are not on the device planned for (auto on a cluster unlike this machine), the
            jobs, none started yet, take that device's defaults instead. The jobs to run."""
            if plan["defaults"]["device"] != device:
                notes: list[str] = []
                plan["jobs"] = make_jobs(targets, settings, device, notes)
                plan["status"] = {j["id"]: {"status": "pending", "attempts": 0} for j in plan["jobs"]}
                plan["defaults"] = {"device": device, "notes": notes}
                write_plan(folder, plan)
            return to_run(plan, folder)

        return run_batch(folder, plan, address=address, workers=workers, retries=retries, console=console,
                         on_workers=workers_device)
    except InputError:
        if not (folder / RUNS).exists():  # Ray or the workers could not start: leave the folder as it was (empty)
            for entry in folder.iterdir():
                entry.unlink() if not entry.is_dir() else shutil.rmtree(entry, ignore_errors=True)
            if made:
                folder.rmdir()
        raise
    finally:
        lock.release()


def resume(folder: Path, *, address: str | None = None, workers: int | None = None, retries: int = 1,
           plugins: list[str] | None = None, console: Console | None = None) -> dict[str, Any]:
    """Continue a batch: finished jobs are skipped, interrupted ones resume from their checkpoints, failed ones rerun.
    `workers` and `address` default to those the batch was started with. Plug-ins are Python code: those the plan
    names are loaded only when given again in `plugins` (as `voicesearch resume --plugin`)."""
    from .driver import import_ray, run_batch

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"batch folder {folder} does not exist")
    read_plan(folder)  # not a batch folder: say so before putting a lock file in it
    import_ray()
    lock = BatchLock(folder).acquire()
    try:
        plan = read_plan(folder)
        _confirm_plugins(plan, folder, plugins)
        before = plan.get("run_options") if isinstance(plan.get("run_options"), dict) else {}
        stored_workers, stored_address = before.get("workers"), before.get("address")
        if workers is None and isinstance(stored_workers, int) and not isinstance(stored_workers, bool) and stored_workers >= 1:
            workers = stored_workers
        if not address and isinstance(stored_address, str) and stored_address:
            address = stored_address
        return run_batch(folder, plan, address=address, workers=workers, retries=retries, console=console)
    finally:
        lock.release()


def _confirm_plugins(plan: dict[str, Any], folder: Path, plugins: list[str] | None) -> None:
    import shlex

    named = sorted({p for job in plan["jobs"] for p in job["config"].get("plugins") or []})
    if named and not plugins:
        flags = " ".join(f"--plugin {shlex.quote(str(p))}" for p in named)
        raise InputError(f"{folder}/batch.json names plug-in code ({', '.join(map(str, named))}), which a resume loads "
                         f"only when you name it: voicesearch batch --resume {shlex.quote(str(folder))} {flags}")
    if plugins:
        given = [str(Path(p).resolve()) if p.endswith(".py") else p for p in plugins]
        for job in plan["jobs"]:
            job["config"]["plugins"] = list(given)
