"""A batch worker: one process (a Ray actor) per GPU, or per share of the CPUs, running jobs one after another.

It keeps what is slow to load between jobs: the renderer (Kokoro's weights, G2P) and the scorers (their embedding
models load on first use). A job is run exactly as `voicesearch clone` / `voicesearch resume` run it: the config
goes through `session.build` and the CLI's `_run` (RunRecorder, checkpoints, report), so every run directory is an
ordinary one. A cached scorer is first given the state a fresh one would have (`load_state_dict` of a freshly
built scorer's `state_dict`, the contract that exact resume rests on), so a job's search does not depend on which
jobs the worker ran before it.

The class is plain Python; the driver turns it into a Ray actor (`ray.remote(...)(BatchWorker)`).
"""
from __future__ import annotations

import copy
import gc
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..loop import Callback


class _StopOnRequest(Callback):
    """Ends the search at the next step boundary once the driver asks (its checkpoint is then exact)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def on_step(self, search: Any, x: Any, result: Any, improved: bool) -> None:
        if self.event.is_set():
            search.request_stop()


def _key(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300]}" if text else type(e).__name__


class BatchWorker:
    def __init__(self, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        self.threads = int(threads) if threads else None
        self._renderers: dict[str, Any] = {}
        self._scorers: dict[str, Any] = {}
        self._batch_choices: dict[str, Any] = {}
        self._stop = threading.Event()

    def info(self) -> dict[str, Any]:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        return {"pid": os.getpid(), "host": socket.gethostname(), "device": device, "threads": torch.get_num_threads()}

    def stop(self) -> None:
        """Stop the running job at its next step boundary; the worker takes no further job."""
        self._stop.set()

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        """Run (or resume) one job; never raises: the result says done, failed (retryable or not) or interrupted."""
        import typer

        t0 = time.perf_counter()
        out: dict[str, Any] = {"id": job["id"], "pid": os.getpid(), "host": socket.gethostname(), "load_seconds": 0.0}
        try:
            out.update(self._run(job, out, t0))
        except InputError as e:  # the target or its settings are wrong: another attempt would fail the same way
            out.update(status="failed", error=str(e), retryable=False)
        except typer.Exit as e:
            if e.exit_code == 130:
                out.update(status="interrupted")
            elif e.exit_code == 3:  # stopped early (out of memory, ...) with a resumable checkpoint
                out.update(status="failed", error="the search stopped early (see the run's output); resumable", retryable=True)
            else:
                out.update(status="failed", error=f"the run ended with status {e.exit_code}", retryable=True)
        except KeyboardInterrupt:
            out.update(status="interrupted")
        except Exception as e:  # noqa: BLE001 - reported to the driver, which retries once
            out.update(status="failed", error=_first_line(e), retryable=True)
        finally:
            gc.collect()
            _empty_cuda_cache()
        out["wall_seconds"] = time.perf_counter() - t0
        return out

    def _run(self, job: dict[str, Any], out: dict[str, Any], t0: float) -> dict[str, Any]:
        from ..cli import _run
        from ..run import CHECKPOINT, RunClaim, read_config
        from ..session import build

        if self._stop.is_set():
            return {"status": "interrupted"}
        run_dir = Path(job["run_dir"])
        resume = (run_dir / CHECKPOINT).is_file()
        if resume and (run_dir / "voice_final.pt").is_file():  # it finished; the batch had not recorded it yet
            from .summary import last_history_row

            row = last_history_row(run_dir) or {}
            return {"status": "done", "best": row.get("best"), "evals": row.get("evals", 0),
                    "seconds": row.get("seconds", 0.0), "resumed": True}
        if resume:
            config = read_config(run_dir)  # what the run really uses (auto choices made concrete)
            config["plugins"] = list(job["config"].get("plugins") or [])  # the plan's, confirmed by the user, not the file's
        else:
            if run_dir.exists():  # an attempt that died before its first checkpoint: nothing in it to keep
                shutil.rmtree(run_dir)
            config = copy.deepcopy(job["config"])
            options = config["renderer"].get("options") or {}
            if self.threads and str(options.get("workers", "")).strip().lower() == "auto":
                options["workers"] = self.threads  # this worker's share of the CPUs, not all of them (CPU defaults)
        renderer = self._renderer(config, out)
        auto = config["batch_size"] == "auto"
        if auto:
            config["batch_size"] = 8  # a placeholder while probing, as autobatch.resolve does
        parts = build(config, renderer=renderer)
        self._share_scorer(parts, config)
        if auto:
            parts = self._auto_batch(config, parts, renderer)
        parts.search.callbacks.append(_StopOnRequest(self._stop))
        out["setup_seconds"] = time.perf_counter() - t0
        with RunClaim(run_dir, fresh=not resume) as claim:  # the run directory's own lock, as for clone/resume
            _run(config, claim, parts, resume=resume)
        p = parts.search.progress
        return {"status": "done", "best": p.best_score, "evals": p.evals, "seconds": p.elapsed, "resumed": resume}

    def _renderer(self, config: dict[str, Any], out: dict[str, Any]) -> Any:
        from ..session import build_renderer, check_names

        key = _key(config["renderer"], config["device"], config.get("plugins"))
        if key not in self._renderers:
            check_names(config)  # loads the plug-ins the config names
            t = time.perf_counter()
            self._renderers[key] = build_renderer(config)
            out["load_seconds"] += time.perf_counter() - t
        return self._renderers[key]

    def _share_scorer(self, parts: Any, config: dict[str, Any]) -> None:
        """Swap the freshly built scorer for this worker's loaded one, in the fresh one's state."""
        key = _key(config["scorer"], config["device"], config.get("plugins"))
        fresh, cached = parts.search.scorer, self._scorers.get(key)
        if cached is None or type(cached) is not type(fresh):
            self._scorers[key] = fresh
            return
        cached.load_state_dict(copy.deepcopy(fresh.state_dict()))
        cached.reset_reference()
        parts.search.scorer = cached  # search.texts stay as build made them: same class, same options

    def _auto_batch(self, config: dict[str, Any], parts: Any, renderer: Any) -> Any:
        """`--batch auto`, probed once per worker for a renderer, scorer and strategy, then reused."""
        from ..autobatch import auto_batch
        from ..session import build

        key = _key(config["renderer"], config["scorer"], config["strategy"], config["device"])
        if key not in self._batch_choices:
            choice = auto_batch(parts)
            self._batch_choices[key] = (choice, getattr(renderer, "max_batch", choice.batch) < choice.batch)
        choice, raise_max_batch = self._batch_choices[key]
        if raise_max_batch:  # one forward per text, as probed (and as the config then says)
            renderer.max_batch = max(renderer.max_batch, choice.batch)
            config["renderer"]["options"]["max_batch"] = choice.batch
        config["batch_size"] = choice.batch
        config["batch_auto"] = choice.record()
        parts = build(config, renderer=renderer, target=parts.target)
        self._share_scorer(parts, config)
        return parts


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
