"""The plan of a batch (targets x strategies x scorers, each a clone config) and the batch folder on disk.

    BATCH/batch.json      the plan (every job's full config) and each job's status; rewritten atomically
    BATCH/batch.lock      held (flock) by the one process running the batch; the OS drops it if that process dies
    BATCH/runs/ID/        one ordinary run directory per job (what `voicesearch clone` writes)
    BATCH/summary.tsv|json, BATCH/index.html   written as jobs finish (summary.py)
"""
from __future__ import annotations

import copy
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from .targets import Target, slug

PLAN = "batch.json"
LOCK = "batch.lock"
RUNS = "runs"
VERSION = 1
STATUSES = ("pending", "running", "done", "failed", "interrupted")


@dataclass
class Settings:
    """The clone options every job shares (a manifest row may override the per-target ones).

    What is left unset (no scorers, no budget, batch/renderer/precision/score_seconds None, all_voices False) gets
    the defaults `voicesearch clone` takes on the batch's device (`voicesearch.cpu.resolve_defaults`)."""

    strategies: list[str]
    scorers: list[str] = field(default_factory=list)
    space: str = "auto"
    steps: int | None = None
    evals: int | None = None
    seconds: float | None = None
    batch: int | str | None = None
    device: str = "auto"
    seed: int = 0
    weights: str = "auto"
    voices: str | None = None
    exclude: list[str] | None = None
    renderer: str | None = None
    precision: str | None = None
    compile: bool = False
    strategy_opt: dict[str, Any] | None = None
    scorer_opt: dict[str, Any] | None = None
    space_opt: dict[str, Any] | None = None
    plugins: list[str] | None = None
    checkpoint_every: int = 10
    max_audio_seconds: float = 600.0
    score_seconds: float | None = None
    all_voices: bool = False


def defaults_device(device: str) -> str:
    """The device whose defaults a batch takes: cpu or cuda as given; for auto, this machine's (a local Ray's
    workers get a GPU when it has one; `start` re-plans if a cluster's workers turn out otherwise)."""
    if device in ("cpu", "cuda"):
        return device
    from ..session import resolve_device

    return resolve_device("auto")


def job_config(target: Target, strategy: str, scorer: str | None, s: Settings,
               device: str | None = None) -> tuple[dict[str, Any], str | None]:
    """The config `voicesearch clone` would write for this target, strategy and scorer (None: the device's
    default) on `device` (default: `defaults_device(s.device)`), and the line saying which CPU defaults it took."""
    from ..cpu import resolve_defaults
    from ..session import check_names, config_path_fields, make_config

    o = target.options
    renderer = s.renderer or "kokoro"  # a placeholder when not given: see resolve_defaults
    options = {"precision": s.precision or "fp32"} if renderer == "kokoro" else {}
    if s.compile and renderer == "kokoro":
        options["compile"] = True
    if s.weights != "auto" or renderer == "kokoro":
        options["weights"] = s.weights
    if any(k in o for k in ("steps", "evals", "seconds")):  # a row's budget replaces the batch's, as on the clone line
        budget = {k: o.get(k) for k in ("steps", "evals", "seconds")}
    elif s.steps or s.evals or s.seconds:
        budget = {"steps": s.steps, "evals": s.evals, "seconds": s.seconds}
    else:
        budget = None
    batch = o.get("batch", s.batch)
    unset = {"budget": budget, "batch_size": batch}  # make_config's placeholders stay where these are None
    config = make_config(
        target={"paths": list(target.paths), "texts": [target.text] if target.text else [], "text_files": None,
                "max_seconds": s.max_audio_seconds},
        strategy={"name": strategy, "options": dict(o.get("strategy_opt", s.strategy_opt or {}))},
        scorer={**({"name": scorer} if scorer is not None else {}),
                "options": dict(o.get("scorer_opt", s.scorer_opt or {}))},
        space={"name": o.get("space", s.space), "options": dict(o.get("space_opt", s.space_opt or {}))},
        renderer={"name": renderer, "options": options},
        device=s.device, voices=s.voices, exclude_voices=list(o.get("exclude", s.exclude or [])),
        seed=int(o.get("seed", s.seed)), checkpoint_every=s.checkpoint_every, plugins=list(s.plugins or []),
        **{k: v for k, v in unset.items() if v is not None},
    )
    if s.score_seconds:
        config["score_seconds"] = s.score_seconds
    given = {key for key, on in (("renderer", s.renderer is not None), ("batch_size", batch is not None),
                                 ("budget", budget is not None), ("score_seconds", s.score_seconds is not None),
                                 ("stock_langs", s.all_voices), ("scorer", scorer is not None),
                                 ("torch_renderer", s.precision is not None or s.compile
                                  or s.weights not in ("auto", "pypi-int8"))) if on}
    config = config_path_fields(config)
    check_names(config)  # plug-ins loaded and names known before the defaults ask about the strategy and scorer
    note = resolve_defaults(config, given, device or defaults_device(s.device))
    return config, note


def make_jobs(targets: list[Target], s: Settings, device: str | None = None,
              notes: list[str] | None = None) -> list[dict[str, Any]]:
    """Every (target, strategy, scorer) of the grid as a job with a unique id and its own run directory.

    A manifest row's strategy/scorer replaces the grid's for that target; what is left unset takes the defaults of
    `device` (default: `defaults_device(s.device)`), as `voicesearch clone` there; each distinct line saying which
    CPU defaults were taken is added to `notes`. The id is the target's name when the batch runs one strategy and
    one scorer, else `NAME--STRATEGY--SCORER` (file-name-safe).
    """
    from ..session import check_names, validate_config

    device = device or defaults_device(s.device)
    combos = []
    for t in targets:
        strategies = [t.options["strategy"]] if "strategy" in t.options else s.strategies
        scorers = [t.options["scorer"]] if "scorer" in t.options else (s.scorers or [None])
        for st in strategies:
            for sc in scorers:
                config, note = job_config(t, st, sc, s, device)
                if note and notes is not None and note not in notes:
                    notes.append(note)
                combos.append((t, st, config["scorer"]["name"], config))
    grid = len({(st, sc) for _, st, sc, _ in combos}) > 1
    jobs, used = [], set()
    for t, st, sc, config in combos:
        base = f"{t.name}--{slug(st)}--{slug(sc)}" if grid else t.name
        jid, i = base, 2
        while jid.lower() in used:
            jid, i = f"{base}-{i}", i + 1
        used.add(jid.lower())
        check_names(config)  # unknown strategy/scorer/space/renderer names fail here, before anything is written
        validate_config(config, f"target {t.name}")
        jobs.append({"id": jid, "target": t.name, "strategy": st, "scorer": sc, "run": f"{RUNS}/{jid}", "config": config})
    return jobs


def check_settings(s: Settings) -> None:
    for key in ("steps", "evals"):
        value = getattr(s, key)
        if value is not None and value < 1:
            raise InputError(f"--{key} must be at least 1 (got {value})")
    if s.seconds is not None and not 0 < s.seconds < float("inf"):
        raise InputError(f"--seconds must be a positive number (got {s.seconds})")
    if s.checkpoint_every < 1:
        raise InputError(f"--checkpoint-every must be at least 1 (got {s.checkpoint_every})")
    if s.seed < 0:
        raise InputError(f"--seed must be a non-negative integer (got {s.seed})")
    if s.score_seconds is not None and not 0 <= s.score_seconds <= 600:
        raise InputError(f"--score-seconds {s.score_seconds}: give seconds from 0 (the whole transcript) to 600")
    if s.device not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device {s.device!r}: a batch places its workers itself; use auto, cpu or cuda")


# ------------------------------------------------------------------------------------------------ batch.json


def new_plan(jobs: list[dict[str, Any]], source: str, settings: Settings, device: str | None = None,
             notes: list[str] | None = None) -> dict[str, Any]:
    """The plan; `defaults` records the device whose defaults the jobs took and the lines saying which."""
    return {"version": VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "targets": source,
            "settings": {k: v for k, v in vars(settings).items()}, "jobs": jobs,
            "defaults": {"device": device or defaults_device(settings.device), "notes": list(notes or [])},
            "status": {j["id"]: {"status": "pending", "attempts": 0} for j in jobs}}


def write_plan(folder: Path, plan: dict[str, Any]) -> None:
    from ..run import write_json

    write_json(Path(folder) / PLAN, plan)


def read_plan(folder: Path) -> dict[str, Any]:
    path = Path(folder) / PLAN
    if not path.is_file():
        raise InputError(f"{folder} is not a batch folder (no {PLAN}); start one with `voicesearch batch TARGETS --out {folder}`")
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not valid JSON ({type(e).__name__}); the batch folder is damaged") from None
    ok = (isinstance(plan, dict) and plan.get("version") == VERSION and isinstance(plan.get("jobs"), list)
          and isinstance(plan.get("status"), dict)
          and all(isinstance(j, dict) and isinstance(j.get("id"), str) and isinstance(j.get("config"), dict)
                  and j.get("run") == f"{RUNS}/{j['id']}" and slug(j["id"]) == j["id"] for j in plan["jobs"]))
    if not ok:
        raise InputError(f"{path} is not a batch plan this version understands; the batch folder is damaged")
    from ..session import validate_config

    for j in plan["jobs"]:
        validate_config(j["config"], f"{path} ({j['id']})")  # batch.json is user input too: field by field
        if not isinstance(plan["status"].get(j["id"], {}), dict):
            raise InputError(f"{path} is not a batch plan this version understands; the batch folder is damaged")
        st = plan["status"].setdefault(j["id"], {"status": "pending", "attempts": 0})
        if st.get("status") not in STATUSES:
            st["status"] = "pending"
        if not isinstance(st.get("attempts"), int) or isinstance(st.get("attempts"), bool):
            st["attempts"] = 0
    return plan


# ------------------------------------------------------------------------------------------------ the lock


class BatchLock:
    """Exclusive flock on BATCH/batch.lock while one process runs the batch (dropped by the OS on any exit)."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK
        self.fd: int | None = None

    def acquire(self) -> "BatchLock":
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise InputError(f"cannot write in batch folder {self.path.parent} ({e.strerror}); pick a writable --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode(errors="replace").strip()
            os.close(fd)
            raise InputError(f"batch {self.path.parent} is already running ({holder or 'another process'}); "
                             "wait for it to finish, or stop it and run `voicesearch batch --resume` again") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def to_run(plan: dict[str, Any], folder: Path) -> list[dict[str, Any]]:
    """Jobs still to run: all but the finished ones (whose run directory is still there)."""
    todo = []
    for job in plan["jobs"]:
        st = plan["status"][job["id"]]
        if st.get("status") == "done" and (Path(folder) / job["run"] / "config.json").is_file():
            continue
        todo.append(job)
    return todo


def payload(job: dict[str, Any], folder: Path) -> dict[str, Any]:
    """What a worker gets: the job with its run directory as an absolute path."""
    out = copy.deepcopy(job)
    out["run_dir"] = str((Path(folder) / job["run"]).resolve())
    return out
