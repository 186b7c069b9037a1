"""`voicesearch app`: a local web app (Gradio, the optional `voicesearch[app]` extra) around the same search as the CLI.

Upload or record a clip, type its words (or transcribe them), pick strategy, scorer and budget, and watch: the score
curve, the best voice so far, the best stock voice for comparison, and the exports to download. Each search is a
normal run directory under `--runs` (the clip is copied into it), so `voicesearch resume/report/export RUN` work on
it and the app resumes CLI runs too. One search runs at a time, in a worker thread; the page polls the run directory.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import registry
from .errors import InputError
from .loop import Callback, Search
from .session import build, check_names, config_path_fields, make_config, resolve_device

LIVE_EVERY = 5.0  # seconds between renders of the best voice so far (each costs one render)
DEFAULT_NAME = "af_clone"


@dataclass
class Job:
    """The search the app runs (at most one at a time)."""

    run_dir: Path
    name: str = DEFAULT_NAME
    phase: str = "starting"  # starting, loading, running, finishing, finished, stopped, failed
    message: str = ""
    search: Search | None = None
    exports: dict[str, Path] = field(default_factory=dict)
    thread: threading.Thread | None = None
    stop_asked: bool = False

    @property
    def active(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def stop(self) -> None:
        self.stop_asked = True  # honoured once the search exists, if it is still loading
        if self.search is not None:
            self.search.request_stop()  # the loop ends at the next step boundary and checkpoints


class LiveBest(Callback):
    """Renders the best voice so far (target text) to RUN/report_assets/best_so_far.wav, at most every LIVE_EVERY s."""

    def __init__(self, job: Job):
        self.job, self.last, self.step = job, -1e9, -1
        self.path = Path(job.run_dir) / "report_assets" / "best_so_far.wav"

    def on_step(self, search, x, result, improved) -> None:
        p = search.progress
        if p.best_step != self.step and time.monotonic() - self.last > LIVE_EVERY and search.target.text:
            from .report_recorder import render_to

            render_to(search, p.best_pack, search.target.text, self.path)  # RNG states kept: resume stays exact
            self.last, self.step = time.monotonic(), p.best_step

    def on_end(self, search, interrupted) -> None:
        self.job.phase = "finishing"  # samples, report, stock comparison, exports


class Runner:
    """Starts, resumes and stops searches; everything the page shows is read back from the run directory."""

    def __init__(self, runs: Path, defaults: dict[str, Any]):
        self.runs, self.defaults = Path(runs), defaults
        self.job: Job | None = None
        self._renderers: dict[str, Any] = {}
        self._curve: tuple[Any, str | None] = (None, None)
        self.outbox = Path(tempfile.mkdtemp(prefix="voicesearch-app-"))  # copies of what the page plays and serves

    def _busy(self) -> None:
        if self.job is not None and self.job.active:
            raise InputError(f"a search is running in {self.job.run_dir}; stop it first")

    def new_config(self, clip: str, text: str, strategy: str, scorer: str, evals: int, batch: int,
                   transcriber: str = "whisper") -> dict[str, Any]:
        """A clone config like the CLI's; transcribes the clip when `text` is empty. Writes nothing.

        What the page does not set takes `voicesearch clone`'s defaults on the app's device (`cpu.resolve_defaults`):
        the scorer when `scorer` is empty, the renderer unless the app was given one, the scoring text, and on a
        CPU the stock voices of the text's language."""
        from .audio import load_audio
        from .cpu import resolve_defaults
        from .transcribe import fill_transcript

        if not clip:
            raise InputError("no clip: upload or record 10–30 s of the speaker first")
        if int(evals) < 1 or int(batch) < 1:
            raise InputError("evaluations and batch must be at least 1")
        d = self.defaults
        scorer = (scorer or "").strip()
        config = make_config(
            target={"paths": [clip], "texts": [text.strip()] if text and text.strip() else [], "max_seconds": 600.0},
            strategy={"name": strategy or "auto", "options": {}},
            scorer={"name": scorer or make_config()["scorer"]["name"], "options": {}},  # a placeholder when empty
            space={"name": "auto", "options": {}},
            renderer={"name": d.get("renderer") or "kokoro", "options": dict(d["renderer_options"])},
            device=d["device"], voices=d["voices"], plugins=list(d["plugins"]),
            budget={"steps": None, "evals": int(evals), "seconds": None}, batch_size=int(batch), checkpoint_every=2,
        )
        config = config_path_fields(config)
        check_names(config)
        given = {"budget", "batch_size", *(["scorer"] if scorer else []), *(["renderer"] if d.get("renderer") else [])}
        if d.get("renderer_options", {}).get("weights", "auto") not in ("auto", "pypi-int8"):
            given.add("torch_renderer")
        resolve_defaults(config, given, resolve_device(config["device"]))
        if not config["target"]["texts"]:
            fill_transcript(config, transcriber, resolve_device(config["device"]))
        rate = getattr(registry.get("renderers", config["renderer"]["name"]), "sample_rate", 24000)
        load_audio(Path(config["target"]["paths"][0]), rate)  # the clip is usable: checked before a run dir exists
        return config

    def start(self, config: dict[str, Any], name: str = DEFAULT_NAME) -> Job:
        """A fresh run directory under `runs` holding a copy of the clip; the search starts in a thread."""
        from .exports import fastapi_name_problem

        self._busy()
        if fastapi_name_problem(name):
            raise InputError(fastapi_name_problem(name))
        run_dir = self.runs / f"{time.strftime('%Y%m%d-%H%M%S')}-app"
        n = 1
        while run_dir.exists():
            n += 1
            run_dir = self.runs / f"{time.strftime('%Y%m%d-%H%M%S')}-app-{n}"
        clip = Path(config["target"]["paths"][0])
        copy = run_dir.resolve() / "target" / clip.name
        copy.parent.mkdir(parents=True)
        shutil.copyfile(clip, copy)
        config["target"]["paths"] = [str(copy)]
        if config["target"].get("transcribed"):
            config["target"]["transcribed"]["clip"] = str(copy)
        return self._launch(Job(run_dir, name), config, resume=False)

    def resume(self, run_dir: str, evals: int, name: str = DEFAULT_NAME) -> Job:
        """Continue a run directory (made by the app or the CLI) to a new total of `evals` evaluations."""
        from .run import CHECKPOINT, read_config, read_history

        self._busy()
        path = Path(run_dir.strip()).expanduser()
        config = read_config(path)
        if not (path / CHECKPOINT).is_file():
            raise InputError(f"{path} has no {CHECKPOINT} to resume from")
        named = list(config.get("plugins") or [])
        given = [str(Path(p).resolve()) if str(p).endswith(".py") else p for p in self.defaults["plugins"]]
        if named and not set(named) <= set(given):  # as `voicesearch resume`: a config never runs code by itself
            raise InputError(f"{path}/config.json names plug-in code ({', '.join(named)}), which the app loads only when "
                             f"started with it: voicesearch app {' '.join('--plugin ' + p for p in named)}")
        history = read_history(path)
        if history and history[-1]["evals"] >= int(evals):
            raise InputError(f"{path} has spent {history[-1]['evals']} evaluations already; give more evaluations to go on")
        config["budget"] = {"steps": None, "evals": int(evals), "seconds": None}
        return self._launch(Job(path, name), config, resume=True)

    def _launch(self, job: Job, config: dict[str, Any], resume: bool) -> Job:
        from .run import RunLock

        lock = RunLock(job.run_dir).acquire()  # as the CLI: one process writes a run directory at a time
        job.thread = threading.Thread(target=self._work, args=(job, config, resume, lock), daemon=True,
                                      name="voicesearch-app")
        self.job = job
        job.thread.start()
        return job

    def _work(self, job: Job, config: dict[str, Any], resume: bool, lock: Any) -> None:
        from .exports import write_exports
        from .report import build_report
        from .report_recorder import ReportRecorder, score_stock
        from .run import CHECKPOINT, CONFIG, RunRecorder, load_checkpoint, write_json
        from .transcribe import write_transcript

        try:
            job.phase = "loading"
            key = json.dumps([config["renderer"], config["device"]], sort_keys=True, default=str)
            parts = build(config, renderer=self._renderers.get(key))  # Kokoro loads once per app
            config = parts.config  # `auto` choices made concrete: config.json names what runs
            self._renderers = {key: parts.renderer}
            job.search = search = parts.search
            if job.stop_asked:
                search.request_stop()
            if resume:
                load_checkpoint(search, job.run_dir / CHECKPOINT)
            write_json(job.run_dir / CONFIG, config)  # a resume's new budget too
            if not resume:
                write_transcript(job.run_dir, config)
            search.callbacks += [RunRecorder(job.run_dir, config["checkpoint_every"], config.get("sample_texts")),
                                 ReportRecorder(job.run_dir, config["checkpoint_every"]), LiveBest(job)]
            job.phase = "running"
            stopped = False
            try:
                search.run()
                job.phase = "finishing"
                score_stock(search, job.run_dir)  # the comparison, whatever the budget (the CLI caps it)
                build_report(job.run_dir, final=True)
            except KeyboardInterrupt:  # run() answers a stop request (Stop, even while loading) this way
                job.phase, stopped = "stopping", True
            if search.progress.voice is not None:
                job.exports = write_exports(search.progress.voice, job.run_dir / "exports", job.name)
            job.phase = "stopped" if stopped else "finished"
        except InputError as e:
            job.phase, job.message = "failed", str(e)
        except Exception as e:  # shown on the page; the run dir keeps whatever was checkpointed
            job.phase, job.message = "failed", f"{type(e).__name__}: {e}"
        finally:
            lock.release()

    # -- what the page shows, read from the run directory

    def served(self, path: Path | None) -> str | None:
        """A copy of `path` in the outbox (Gradio serves files from the temp folder), refreshed when it changes."""
        if path is None or not path.is_file():
            return None
        st = path.stat()
        out = self.outbox / f"{st.st_mtime_ns}-{st.st_size}" / path.name
        if not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out)
        return str(out)

    def _curve_png(self, history: list[dict[str, Any]], baseline: Any) -> str | None:
        from .report_plots import score_curves

        key = (len(history), history[-1]["time"] if history else None, baseline)
        if history and self._curve[0] != key:  # drawn only when the run moved: the poll must not slow the search
            self._curve = (key, score_curves(history, baseline))
        return self._curve[1] if history else None

    def snapshot(self) -> dict[str, Any]:
        """Status line, score curve (PNG data URI), best voice, best stock voice and exports of the current job."""
        from .report import STOCK_SCORES, best_clone
        from .run import read_history

        job = self.job
        if job is None:
            return {"status": "No search yet: upload a clip, check its words, press **Start**.", "history": 0}
        history = read_history(job.run_dir)
        stock_file = job.run_dir / STOCK_SCORES
        stock = json.loads(stock_file.read_text()) if stock_file.is_file() else None
        baseline = (stock["best"], stock["best_score"]) if stock else None
        parts = [f"**{job.phase}**", f"run dir `{job.run_dir}`"]
        if history:
            last = history[-1]
            per_eval = last["seconds"] / max(last["evals"], 1)
            budget = (job.search.budget.evals if job.search else None) or "?"
            parts += [f"step {last['step']}", f"{last['evals']}/{budget} evals", f"best {last['best']:.4f}",
                      f"{per_eval:.2f} s/eval"]
        if baseline:
            parts.append(f"best stock voice {baseline[0]} {baseline[1]:.4f}")
        if job.message:
            parts.append(f"error: {job.message}")
        if job.phase in ("finished", "stopped"):
            parts.append(f"continue with `voicesearch resume {job.run_dir} --evals N` or **Resume** here")
        return {
            "status": " · ".join(parts),
            "history": len(history),
            "curve": self._curve_png(history, baseline),
            "best": self.served(best_clone(job.run_dir)),
            "stock": self.served(job.run_dir / "samples" / "stock_best_target_text.wav"),
            "exports": [self.served(p) for p in job.exports.values()] or None,
        }


def page_defaults(device: str) -> dict[str, Any]:
    """The page's starting Scorer, Evaluations and Batch: `voicesearch clone`'s defaults on `device`. Where that
    default is a time budget (a CPU: `cpu.CPU_SEARCH_SECONDS`), the app, whose budget, progress and Resume count
    evaluations, starts from `cpu.CPU_EVALS`, about what that time buys."""
    from .cpu import CPU_EVALS, resolve_defaults

    config = make_config()
    resolve_defaults(config, set(), resolve_device(device))
    return {"scorer": config["scorer"]["name"], "evals": config["budget"].get("evals") or CPU_EVALS,
            "batch": config["batch_size"]}


def build_app(runs: Path = Path("runs"), device: str = "auto", voices: str | None = None, weights: str = "auto",
              renderer: str | None = None, plugins: list[str] | None = None, evals: int | None = None,
              batch: int | None = None):
    """The Gradio Blocks app (not launched). `renderer`, `evals`, `batch` left None: `voicesearch clone`'s defaults
    on `device` (see `page_defaults` and `Runner.new_config`)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError:
        raise InputError("the web app needs Gradio: pip install 'voicesearch[app]'") from None

    for p in plugins or []:
        registry.load_plugin(p)
    if any(v is not None and v < 1 for v in (evals, batch)):
        raise InputError(f"--evals {evals} --batch {batch}: give numbers of at least 1, or leave them out "
                         "(the device's defaults)")
    start_with = page_defaults(device)
    evals, batch = evals or start_with["evals"], batch or start_with["batch"]
    options = {"weights": weights} if renderer in (None, "kokoro") else {}
    runner = Runner(runs, {"device": device, "voices": str(Path(voices).resolve()) if voices else None, "renderer": renderer,
                           "renderer_options": options, "plugins": list(plugins or [])})
    shown: dict[str, Any] = {}

    def start(clip, text, strategy, scorer, evals_, batch_, name):
        try:
            config = runner.new_config(clip, text, strategy, scorer, evals_, batch_)
            runner.start(config, (name or DEFAULT_NAME).strip())
        except InputError as e:
            raise gr.Error(str(e), print_exception=False) from None
        shown.clear()
        return config["target"]["texts"][0]

    def resume(run_dir, evals_, name):
        try:
            runner.resume(run_dir or "", evals_, (name or DEFAULT_NAME).strip())
        except InputError as e:
            raise gr.Error(str(e), print_exception=False) from None
        shown.clear()

    def transcribe(clip):
        from .transcribe import get_transcriber, transcribe_clip

        try:
            if not clip:
                raise InputError("no clip to transcribe: upload or record one first")
            return transcribe_clip(clip, get_transcriber("whisper", resolve_device(device)))
        except InputError as e:
            raise gr.Error(f"{e}; type the words instead", print_exception=False) from None

    def stop():
        if runner.job is not None:
            runner.job.stop()

    def poll():
        snap = runner.snapshot()
        out = [snap["status"]]
        for key in ("curve", "best", "stock", "exports"):
            value = snap.get(key)
            if key == "curve":
                value = f"<img id='curve-img' alt='score curve after {snap['history']} steps' src='{value}' style='width:100%'>" \
                    if value else "<p>The score curve appears after the first step.</p>"
            changed = shown.get(key) != value
            shown[key] = value
            out.append(value if changed else gr.skip())
        return out

    strategies = ["auto", *registry.names("strategies")]
    scorers = registry.names("scorers")
    if start_with["scorer"] not in scorers:  # a formula (compose:...) is not a registered name: listed first
        scorers = [start_with["scorer"], *scorers]
    with gr.Blocks(title="voicesearch") as demo:
        gr.Markdown("# voicesearch\nClone a speaker into a Kokoro-82M voice: give 10–30 s of one person speaking and "
                    "what they say, then search. Runs are saved under `" + str(runs) + "` like the CLI's.")
        with gr.Row():
            with gr.Column(scale=2):
                clip = gr.Audio(label="Target clip", sources=["upload", "microphone"], type="filepath", elem_id="clip")
                text = gr.Textbox(label="What the clip says (empty: transcribe on Start)", lines=3, elem_id="text")
                transcribe_btn = gr.Button("Transcribe", elem_id="transcribe")
                with gr.Row():
                    strategy = gr.Dropdown(strategies, value="auto", label="Strategy", allow_custom_value=True, elem_id="strategy")
                    scorer = gr.Dropdown(scorers, value=start_with["scorer"], label="Scorer", allow_custom_value=True,
                                         elem_id="scorer")
                with gr.Row():
                    evals_box = gr.Number(evals, label="Evaluations", precision=0, minimum=1, elem_id="evals")
                    batch_box = gr.Number(batch, label="Batch", precision=0, minimum=1, elem_id="batch")
                name = gr.Textbox(DEFAULT_NAME, label="Voice name for the exports (af_…, like the stock voices)", elem_id="name")
                with gr.Row():
                    start_btn = gr.Button("Start", variant="primary", elem_id="start")
                    stop_btn = gr.Button("Stop", elem_id="stop")
                with gr.Accordion("Resume a run directory", open=False):
                    run_dir = gr.Textbox(label="Run directory", elem_id="run-dir")
                    resume_btn = gr.Button("Resume", elem_id="resume")
            with gr.Column(scale=3):
                status = gr.Markdown(elem_id="status")
                curve = gr.HTML(elem_id="curve")
                best = gr.Audio(label="Best voice so far (the clip's words)", type="filepath", interactive=False, elem_id="best")
                stock = gr.Audio(label="Best stock voice (scored when the search ends)", type="filepath", interactive=False,
                                 elem_id="stock")
                exports = gr.File(label="Exports: .pt for kokoro / Kokoro-FastAPI, voices.bin for kokoro-onnx, .npz",
                                  file_count="multiple", interactive=False, elem_id="exports")
        start_btn.click(start, [clip, text, strategy, scorer, evals_box, batch_box, name], [text])
        resume_btn.click(resume, [run_dir, evals_box, name], None)
        transcribe_btn.click(transcribe, [clip], [text])
        stop_btn.click(stop, None, None)
        gr.Timer(1.0).tick(poll, None, [status, curve, best, stock, exports], show_progress="hidden")
    demo.runner = runner
    return demo
