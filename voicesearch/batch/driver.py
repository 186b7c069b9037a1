"""The batch driver: starts (or joins) Ray, places the workers, hands out jobs, keeps batch.json and the summary.

Ray is imported here only, when a batch runs. Jobs go from a queue to whichever worker is idle; a failed job is
retried (once by default) unless its input is wrong; a worker that dies is replaced and its job retried, resuming
from the run's last checkpoint. The first Ctrl-C asks every running job to stop at its next step boundary.
"""
from __future__ import annotations

import collections
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import InputError
from . import summary
from .plan import payload, to_run, write_plan
from .worker import BatchWorker

LOCAL_OBJECT_STORE = 256 * 2**20  # jobs pass only small dicts through Ray
WORKER_START_TIMEOUT = 600.0


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError("voicesearch batch runs on Ray, which is not installed here: pip install 'voicesearch[ray]'") from None
    return ray


def start_ray(address: str | None, workers: int | None) -> tuple[Any, str]:
    """ray.init: the cluster at `address` (or $RAY_ADDRESS), else a new local Ray on this machine's CPUs and GPUs."""
    ray = import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home from a batch
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address:
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(address="local", num_cpus=max(os.cpu_count() or 1, workers or 1), include_dashboard=False,
                     object_store_memory=LOCAL_OBJECT_STORE, **quiet)
    except Exception as e:  # noqa: BLE001 - Ray raises many kinds; the user needs one line
        where = f" at {address}" if address else ""
        raise InputError(f"cannot start Ray{where}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__}"
                         + ("; check --address / $RAY_ADDRESS" if address else "")) from None
    return ray, address or "local"


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Ray retries an unreachable address for minutes: try its TCP port first and say so in one line."""
    import socket
    from urllib.parse import urlsplit

    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"ray-gcs://{address}")
    try:
        host, port = parts.hostname, parts.port or (10001 if parts.scheme == "ray" else 6379)
    except ValueError:
        host, port = None, None
    if not host:
        raise InputError(f"--address {address!r}: give ray://HOST:PORT or HOST:PORT")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise InputError(f"cannot reach the Ray cluster at {address} ({e.strerror or type(e).__name__}); "
                         "check --address / $RAY_ADDRESS and that `ray start --head` runs there") from None


def place_workers(ray: Any, device: str, workers: int | None) -> tuple[int, bool, int]:
    """(number of workers, on GPUs?, torch threads each): one per GPU, else CPU workers of 4 threads."""
    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), max(1, int(res.get("CPU", 1)))
    use_gpu = gpus > 0 and device != "cpu"
    if device == "cuda" and not gpus:
        raise InputError("--device cuda, but the Ray cluster has no GPU; use --device cpu or auto")
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be at least 1 (got {workers})")
    if use_gpu:
        n = workers or gpus
        if n > gpus:
            raise InputError(f"--workers {n}: the Ray cluster has {gpus} GPU(s) and a worker takes one; "
                             "give at most that many, or --device cpu")
        return n, True, max(1, min(8, cpus // n))
    n = workers or max(1, cpus // 4)
    return n, False, max(1, cpus // n)


def _fraction(config: dict[str, Any], row: dict[str, Any] | None) -> float:
    """How much of its budget a run has spent (whichever limit comes first)."""
    if not row:
        return 0.0
    b, parts = config.get("budget", {}), []
    for key, done in (("evals", row.get("evals", 0)), ("steps", row.get("step", 0)), ("seconds", row.get("seconds", 0.0))):
        if b.get(key):
            parts.append(float(done) / float(b[key]))
    return min(1.0, max(parts, default=0.0))


class _Display:
    """One progress bar for the whole batch: jobs done / running / failed, and an ETA from the work done so far."""

    def __init__(self, console: Console, total: int):
        self.console, self.total, self.start = console, total, time.monotonic()
        self.bar = Progress(TextColumn("[bold]batch"), BarColumn(), TextColumn("{task.fields[done]}/{task.fields[jobs]} done"),
                            TextColumn("{task.fields[running]} running"), TextColumn("[red]{task.fields[failed]} failed"),
                            TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"), console=console, transient=False)
        self.task = self.bar.add_task("batch", total=max(total, 1), done=0, jobs=total, running=0, failed=0, eta="-")
        self.base: dict[str, float] = {}  # each job's budget fraction when this batch run first saw it
        self.ended: set[str] = set()  # jobs done or failed in this batch run

    def __enter__(self) -> "_Display":
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()

    def update(self, done: int, failed: int, running: dict[str, float]) -> None:
        for jid, f in running.items():
            self.base.setdefault(jid, f)
        completed = done + failed + sum(running.values())
        made = sum(1.0 - self.base.get(j, 0.0) for j in self.ended) + sum(f - self.base[j] for j, f in running.items())
        eta = _clock(self.elapsed() * (self.total - completed) / made) if made > 0.01 and completed < self.total else "-"
        self.bar.update(self.task, completed=completed, done=done, running=len(running), failed=failed, eta=eta)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def finished(self, jid: str) -> None:
        self.ended.add(jid)


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def run_batch(folder: Path, plan: dict[str, Any], *, address: str | None = None, workers: int | None = None,
              retries: int = 1, console: Console | None = None,
              on_workers: Callable[[dict[str, Any], str], list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Run every job of `plan` not yet done, in `folder` (locked by the caller). Returns what happened:
    {"counts", "interrupted", "wall_seconds", "init_seconds", "workers": [...], "results": [...]}.
    A new batch passes `on_workers(plan, device)`: called once the workers' device (cpu or cuda) is known, it may
    re-plan for that device and returns the jobs to run; the plan's defaults lines are then printed once."""
    console = console or Console(stderr=True)
    folder = Path(folder)
    todo = to_run(plan, folder)
    t0 = time.perf_counter()
    outcome: dict[str, Any] = {"interrupted": False, "results": [], "workers": [], "skipped": len(plan["jobs"]) - len(todo)}
    if not todo:
        outcome.update(counts=summary.counts(summary.write(plan, folder)), wall_seconds=0.0, init_seconds=0.0)
        return outcome
    device = plan["settings"].get("device", "auto")
    ray, where = start_ray(address, workers)
    try:
        n, use_gpu, threads = place_workers(ray, device, workers)
        if on_workers is not None:
            todo = on_workers(plan, "cuda" if use_gpu else "cpu")
            for note in (plan.get("defaults") or {}).get("notes") or []:
                console.print(note, highlight=False, markup=False, soft_wrap=True)
        n = min(n, len(todo))
        actor_cls = ray.remote(num_cpus=1, num_gpus=1 if use_gpu else 0, max_concurrency=2, max_restarts=0)(BatchWorker)
        actors = [actor_cls.remote(threads) for _ in range(n)]
        infos = ray.get([a.info.remote() for a in actors], timeout=WORKER_START_TIMEOUT)
        outcome["init_seconds"] = time.perf_counter() - t0
        outcome["workers"] = infos
        kind = f"{n} GPU worker(s) ({infos[0]['device']})" if use_gpu else f"{n} CPU worker(s), {threads} thread(s) each"
        console.print(f"[dim]Ray {where}: {kind}; {len(todo)} job(s) to run, {outcome['skipped']} already done; "
                      f"batch folder {folder}[/dim]")
        _dispatch(ray, actor_cls, actors, infos, threads, todo, plan, folder, retries, console, outcome)
    finally:
        ray.shutdown()
    outcome["wall_seconds"] = time.perf_counter() - t0
    outcome["counts"] = summary.counts(summary.write(plan, folder))
    return outcome


def _dispatch(ray: Any, actor_cls: Any, actors: list[Any], infos: list[dict[str, Any]], threads: int,
              todo: list[dict[str, Any]], plan: dict[str, Any], folder: Path, retries: int, console: Console,
              outcome: dict[str, Any]) -> None:
    status = plan["status"]
    pending = collections.deque(todo)
    idle = list(zip(actors, infos))
    inflight: dict[Any, tuple[dict[str, Any], Any, dict[str, Any]]] = {}
    tries: dict[str, int] = collections.Counter()
    replacements, stopping, stop_deadline = 0, False, None
    for job in todo:
        status[job["id"]].update(status="pending")
        status[job["id"]].pop("worker", None)
    write_plan(folder, plan)
    summary.write(plan, folder)
    display = _Display(console, len(todo))

    def record(job: dict[str, Any], result: dict[str, Any]) -> None:
        jid = job["id"]
        st = status[jid]
        for key in ("wall_seconds", "setup_seconds", "load_seconds", "resumed"):
            if key in result:
                st[key] = result[key]
        outcome["results"].append(result)
        if result["status"] == "done":
            st.update(status="done", error="")
            best = "-" if result.get("best") is None else f"{result['best']:.4f}"
            console.print(f"done   {jid}: best {best}, {result.get('evals', 0)} evals, "
                          f"{result.get('wall_seconds', 0.0):.0f} s", highlight=False)
        elif result["status"] == "interrupted" or stopping:
            st.update(status="interrupted")
        elif result.get("retryable", True) and tries[jid] <= retries:
            st.update(status="pending", error=f"retrying after: {result.get('error', '')}")
            console.print(f"retry  {jid}: {result.get('error', '')}", highlight=False, markup=False)
            pending.append(job)
        else:
            st.update(status="failed", error=result.get("error", "failed"))
            console.print(f"failed {jid}: {st['error']}", highlight=False, markup=False, style="red")
        if st["status"] in ("done", "failed"):
            display.finished(jid)
        write_plan(folder, plan)
        summary.write(plan, folder)

    with display:
        while inflight or (pending and not stopping):
            try:
                while pending and idle and not stopping:
                    job = pending.popleft()
                    actor, info = idle.pop(0)
                    tries[job["id"]] += 1
                    st = status[job["id"]]
                    st.update(status="running", attempts=int(st.get("attempts", 0)) + 1,
                              worker=f"pid {info['pid']} on {info['host']}")
                    write_plan(folder, plan)
                    inflight[actor.run.remote(payload(job, folder))] = (job, actor, info)
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
                for ref in ready:
                    job, actor, info = inflight.pop(ref)
                    try:
                        result = ray.get(ref)
                        idle.append((actor, info))
                    except Exception as e:  # noqa: BLE001 - the worker process died (killed, out of memory, ...)
                        result = {"id": job["id"], "status": "failed", "retryable": True, "wall_seconds": 0.0,
                                  "error": f"worker pid {info['pid']} died ({type(e).__name__})"}
                        if not stopping and replacements < 2 * len(actors) + 2:
                            replacements += 1
                            new = actor_cls.remote(threads)
                            idle.append((new, ray.get(new.info.remote(), timeout=WORKER_START_TIMEOUT)))
                    record(job, result)
                if not idle and not inflight and pending:
                    for job in pending:
                        status[job["id"]].update(status="failed", error="no worker left: they kept dying")
                    pending.clear()
                    write_plan(folder, plan)
                if stopping and stop_deadline is not None and time.monotonic() > stop_deadline:
                    break
                display.update(*_counts(status, todo), _running(inflight, folder))
            except KeyboardInterrupt:
                if stopping:
                    break
                stopping, outcome["interrupted"] = True, True
                stop_deadline = time.monotonic() + 120.0
                console.print("stopping: each running job ends at its next step boundary (Ctrl-C again to stop now)")
                for _, actor, _ in inflight.values():
                    actor.stop.remote()
    for job, _, _ in inflight.values():
        status[job["id"]].update(status="interrupted")
    for job in pending:
        if status[job["id"]]["status"] == "running":
            status[job["id"]].update(status="interrupted")
    write_plan(folder, plan)


def _counts(status: dict[str, dict[str, Any]], todo: list[dict[str, Any]]) -> tuple[int, int]:
    done = sum(status[j["id"]]["status"] == "done" for j in todo)
    failed = sum(status[j["id"]]["status"] == "failed" for j in todo)
    return done, failed


def _running(inflight: dict[Any, tuple[dict[str, Any], Any, dict[str, Any]]], folder: Path) -> dict[str, float]:
    return {job["id"]: _fraction(job["config"], summary.last_history_row(folder / job["run"]))
            for job, _, _ in inflight.values()}
