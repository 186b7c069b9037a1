"""RUN_DIR/report.html: one page to listen to and look at a run, built from the run directory alone.

`build_report(RUN)` (and `voicesearch report RUN`) reads only files in the run directory and may run at any
time; while a search runs, `voicesearch.report_recorder.ReportRecorder` first writes the files only the live
search can give (target clips, trajectory, stock scores, ...; listed there) and then calls it. Run directories
older than those files still render: the target clips then come from config.json's paths and the stock-voice map
from its voices folder.

Audio is embedded as FLAC data URIs and plots as PNG data URIs: the page opens with no network,
and can be copied out of the run directory on its own.
"""
from __future__ import annotations

import base64
import html
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

REPORT = "report.html"
TRAJECTORY = "trajectory.jsonl"
STOCK_SCORES = "stock_scores.json"
ASSETS = "report_assets"
REFRESH_SECONDS = 20
MAX_EMBED_SECONDS = 30.0  # longer target clips are embedded cut, to keep the page small
MAX_TARGET_CLIPS = 4


def folder_stock(config: dict[str, Any]):
    """The stock voices of the run's voices folder (or $VOICESEARCH_VOICES_DIR), or None when there is none."""
    from .stock import StockVoices, voices_folder_from_env

    folder = config.get("voices") or voices_folder_from_env()
    if not folder or not Path(folder).is_dir():
        return None
    return StockVoices.from_folder(folder)


class Figures:
    """Figures of one page kept from one rebuild to the next while their inputs are unchanged (the spectrograms
    and the map are the slow ones): a live run's ReportRecorder holds one; a one-off build needs none."""

    def __init__(self, size: int = 64):
        self.size, self._made = size, {}

    def get(self, key: tuple, make) -> str:
        if key not in self._made:
            if len(self._made) >= self.size:
                self._made.clear()
            self._made[key] = make()
        return self._made[key]


# ----------------------------------------------------------------------------------------------------------------
# The page, from run-directory files only


def build_report(run_dir: Path, *, final: bool = True, figures: Figures | None = None) -> Path:
    """Write RUN_DIR/report.html from the run directory's files and return its path.

    `final=False` marks the page as a running search (it reloads itself); `figures` keeps unchanged figures
    between the rebuilds of a live run.
    """
    from .run import read_config, read_history
    from .voice import atomic_write_bytes

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    history = read_history(run_dir)
    page = _page(run_dir, config, history, final, figures or Figures())
    path = run_dir / REPORT
    atomic_write_bytes(path, page.encode())
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file up to the first that does not parse (a line cut by a crash); [] if none."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except json.JSONDecodeError:
        return None


def _esc(v: Any) -> str:
    return html.escape(str(v))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def _page(run_dir: Path, config: dict[str, Any], history: list[dict[str, Any]], final: bool, figures: Figures) -> str:
    meta = _read_json(run_dir / ASSETS / "meta.json") or {}
    stock_scores = _read_json(run_dir / STOCK_SCORES)
    trajectory = read_jsonl(run_dir / TRAJECTORY)
    last = history[-1] if history else None
    status = "finished" if final else "running"
    if final and not (run_dir / "voice_final.pt").is_file() and (run_dir / "checkpoint.pt").is_file():
        status = "stopped early (resume it with `voicesearch resume`)"
    head_refresh = "" if final else f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
    note = "" if final else f" — this page reloads every {REFRESH_SECONDS} s"
    parts = [(_summary, config, last, stock_scores, meta)]
    if last is not None:
        parts += [(_players, run_dir, config, meta, stock_scores), (_curves, history, stock_scores),
                  (_spectrograms, run_dir, config, figures), (_stock_map, run_dir, config, trajectory, stock_scores, figures),
                  (_judges, run_dir)]
    parts.append((_settings, config, meta, last))
    sections = [_section(fn, *args) for fn, *args in parts]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">{head_refresh}
<title>voicesearch — {_esc(run_dir.name)}</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 1.5em auto; padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.5em; margin-bottom: 0.1em; }} h2 {{ border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }}
.status {{ color: #666; }} .cards {{ display: flex; flex-wrap: wrap; gap: 0.8em; }}
.card {{ background: #f5f7fa; border-radius: 8px; padding: 0.5em 0.9em; min-width: 8em; }}
.card b {{ display: block; font-size: 1.3em; }} .card span {{ color: #666; font-size: 0.85em; }}
table {{ border-collapse: collapse; }} td, th {{ border-bottom: 1px solid #eee; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }}
audio {{ width: 320px; }} .len {{ white-space: nowrap; }} img {{ max-width: 100%; }} .text {{ color: #555; font-style: italic; max-width: 40em; }}
pre {{ background: #f5f7fa; padding: 0.8em; overflow-x: auto; }} .muted {{ color: #888; }}
</style></head><body>
<h1>voicesearch run <code>{_esc(run_dir.name)}</code></h1>
<p class="status">{_esc(status)} · generated {time.strftime('%Y-%m-%d %H:%M:%S')}{note}</p>
{''.join(sections)}
</body></html>
"""


def _section(make, *args: Any) -> str:
    """One section that fails (an unreadable clip, a missing library) leaves the rest of the page standing."""
    try:
        return make(*args)
    except Exception as e:
        log.warning("report section %s failed: %s: %s", make.__name__, type(e).__name__, e)
        return f"<p class='muted'>({_esc(make.__name__.strip('_'))} unavailable: {_esc(type(e).__name__)}: {_esc(e)})</p>"


def _summary(config: dict[str, Any], last: dict[str, Any] | None, stock_scores: dict | None, meta: dict) -> str:
    if last is None:
        return "<p>No step finished yet.</p>"
    cards = [("best score", _fmt(last["best"]), f"at step {last['best_step']}"),
             ("evaluations", str(last["evals"]), f"{last['step']} step{'s' if last['step'] != 1 else ''}"),
             ("search time", f"{last['seconds']:.1f} s", f"{last['evals'] / max(last['seconds'], 1e-9):.2f} evals/s")]
    if stock_scores:
        gain = last["best"] - stock_scores["best_score"]
        cards.append(("vs best stock voice", f"{gain:+.4g}", f"{stock_scores['best']} scored {_fmt(stock_scores['best_score'])}"))
    for k, v in (last.get("best_parts") or {}).items():
        cards.append((k, _fmt(v), "part of the best score"))
    body = "".join(f'<div class="card"><span>{_esc(a)}</span><b>{_esc(b)}</b><span>{_esc(c)}</span></div>' for a, b, c in cards)
    what = f"{config['strategy']['name']} · {config['scorer']['name']} · {config['space']['name']} space · device {meta.get('device') or config.get('device')}"
    return f'<p>{_esc(what)}</p><div class="cards">{body}</div>'


# -- audio ------------------------------------------------------------------------------------------------------


def _audio_tag(path: Path, role: str) -> str:
    import soundfile as sf

    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    data = data.mean(axis=1)
    cut = len(data) > MAX_EMBED_SECONDS * sr
    data = data[: int(MAX_EMBED_SECONDS * sr)]
    buf = io.BytesIO()
    sf.write(buf, data, sr, format="FLAC", subtype="PCM_16")
    uri = "data:audio/flac;base64," + base64.b64encode(buf.getvalue()).decode()
    length = f"{len(data) / sr:.1f} s" + (f" (first {MAX_EMBED_SECONDS:.0f} s)" if cut else "")
    return f'<audio controls preload="metadata" data-role="{role}" src="{uri}"></audio></td><td class="muted len">{length}'


def _target_clips(run_dir: Path, config: dict[str, Any]) -> list[Path]:
    written = sorted((run_dir / "samples").glob("target_*.wav"))
    if written:
        return written
    return [Path(p) for p in config["target"].get("paths", [])[:MAX_TARGET_CLIPS] if Path(p).is_file()]


def best_clone(run_dir: Path) -> Path | None:
    final, so_far = run_dir / "samples" / "best_target_text.wav", run_dir / ASSETS / "best_so_far.wav"
    if so_far.is_file() and (not final.is_file() or so_far.stat().st_mtime > final.stat().st_mtime):
        return so_far
    return final if final.is_file() else None


def _players(run_dir: Path, config: dict[str, Any], meta: dict, stock_scores: dict | None) -> str:
    transcripts = meta.get("transcripts") or config["target"].get("texts") or []
    rows = []
    for i, clip in enumerate(_target_clips(run_dir, config)):
        text = transcripts[i] if i < len(transcripts) else ""
        what = "the demo's hidden speaker" if config["target"].get("demo") else "target"
        rows.append((f"{what} clip {i + 1}", _audio_tag(clip, "target"), text))
    stock = run_dir / "samples" / "stock_best_target_text.wav"
    target_text = next((t for t in transcripts if t.strip()), "")
    if stock.is_file() and stock_scores:
        rows.append((f"best stock voice: {stock_scores['best']} (score {_fmt(stock_scores['best_score'])}, best of "
                     f"{len(stock_scores['scores'])})",
                     _audio_tag(stock, "stock"), target_text))
    clone = best_clone(run_dir)
    if clone is not None:
        label = "clone so far" if clone.parent.name == ASSETS else "clone (best voice)"
        rows.append((f"{label}, target text", _audio_tag(clone, "clone"), target_text))
    heldout = config.get("sample_texts") or []
    for i, text in enumerate(heldout):
        path = run_dir / "samples" / f"best_heldout_{i}.wav"
        if path.is_file():
            rows.append(("clone, held-out text", _audio_tag(path, "clone-heldout"), text))
    if not rows:
        return "<h2>Listen</h2><p class='muted'>No audio yet.</p>"
    body = "".join(f"<tr><th>{_esc(a)}</th><td>{b}</td><td class='text'>{_esc(c)}</td></tr>" for a, b, c in rows)
    missing = "" if (run_dir / "samples" / "best_target_text.wav").is_file() else \
        "<p class='muted'>The best voice's samples are written when the search ends.</p>"
    return f"<h2>Listen</h2><table>{body}</table>{missing}"


# -- plots ------------------------------------------------------------------------------------------------------


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{_esc(alt)}">'


def _file_key(*paths: Path) -> tuple:
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) if p.is_file() else (str(p),) for p in paths)


def _curves(history: list[dict[str, Any]], stock_scores: dict | None) -> str:
    from . import report_plots

    baseline = (stock_scores["best"], stock_scores["best_score"]) if stock_scores else None
    out = "<h2>Score</h2>" + _img(report_plots.score_curves(history, baseline), "score over evaluations and time")
    parts = report_plots.score_parts(history)
    if parts:
        out += "<h3>Parts of the score</h3>" + _img(parts, "parts of the score")
    return out


def _spectrograms(run_dir: Path, config: dict[str, Any], figures: Figures) -> str:
    from . import report_plots

    clips = [("target", p) for p in _target_clips(run_dir, config)[:1]]
    stock = run_dir / "samples" / "stock_best_target_text.wav"
    if stock.is_file():
        clips.append(("best stock voice", stock))
    clone = best_clone(run_dir)
    if clone is not None:
        clips.append(("clone" if clone.parent.name != ASSETS else "clone so far", clone))
    if not clips:
        return ""
    uri = figures.get(("spec", *clips) + _file_key(*(p for _, p in clips)),
                      lambda: report_plots.mel_spectrograms(clips, MAX_EMBED_SECONDS))
    return "<h2>Mel spectrograms</h2>" + _img(uri, "mel spectrograms of target and clone")


def _stock_styles(run_dir: Path, config: dict[str, Any]) -> tuple[list[str], np.ndarray] | None:
    path = run_dir / ASSETS / "stock_styles.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return [str(n) for n in z["names"]], z["styles"]
    stock = folder_stock(config)
    if stock is None:
        return None
    return stock.names, stock.packs.mean(1).numpy()


def _best_style(run_dir: Path) -> np.ndarray | None:
    path = run_dir / "voice_final.pt"  # the search's answer once it ended, else the best scored voice so far
    if not path.is_file():
        path = run_dir / "voice_best.pt"
    if not path.is_file():
        return None
    from .voice import load_voice

    return load_voice(path)[:, 0, :].mean(0).numpy()


def _stock_map(run_dir: Path, config: dict[str, Any], trajectory: list[dict], stock_scores: dict | None,
               figures: Figures) -> str:
    from . import report_plots

    styles = _stock_styles(run_dir, config)
    if styles is None:
        return ("<h2>Among the stock voices</h2><p class='muted'>No stock voices to draw: set the run's voices folder "
                "or $VOICESEARCH_VOICES_DIR.</p>")
    names, stock = styles
    best = _best_style(run_dir)
    if best is None and trajectory:
        best = np.array(trajectory[-1]["style"], dtype=np.float32)
    demo = config["target"].get("demo") or None
    hidden = None
    if isinstance(demo, dict) and all(v in names for v in demo.get("voices", [])):
        w = np.array(demo["weights"], dtype=np.float32)
        hidden = (w[:, None] * stock[[names.index(v) for v in demo["voices"]]]).sum(0) / w.sum()
    excluded = set(config.get("exclude_voices") or [])
    scores = (stock_scores or {}).get("scores") or {}
    key = ("map", tuple(names), len(trajectory), trajectory[-1]["step"] if trajectory else None, tuple(sorted(excluded)),
           str(demo), tuple(scores.items())) + _file_key(run_dir / "voice_best.pt", run_dir / "voice_final.pt", run_dir / ASSETS / "stock_styles.npz")
    uri = figures.get(key, lambda: report_plots.stock_map(names, stock, excluded, scores, hidden, trajectory, best))
    out = "<h2>Among the stock voices</h2>" + _img(uri, "the clone among the stock voices (PCA map)")
    out += "<p class='muted'>Red dots: the best voice at each checkpoint where it changed (darker = later).</p>"
    if best is not None:
        d = np.linalg.norm(stock - best, axis=1)
        score = (lambda n: f"<td>{_esc(_fmt(scores[n])) if n in scores else ''}</td>") if scores else (lambda n: "")
        rows = "".join(f"<tr><td>{_esc(names[i])}</td><td>{d[i]:.3f}</td>{score(names[i])}</tr>" for i in np.argsort(d)[:5])
        head = "<tr><th>voice</th><th>style distance</th>" + ("<th>score</th>" if scores else "") + "</tr>"
        out += f"<h3>Nearest stock voices to the clone</h3><table>{head}{rows}</table>"
        if hidden is not None:
            allowed = [i for i, n in enumerate(names) if n not in excluded] or list(range(len(names)))
            nearest = float(np.linalg.norm(stock[allowed] - hidden, axis=1).min())
            out += (f"<p>Style distance from the clone to the hidden target: {np.linalg.norm(hidden - best):.3f} "
                    f"(from the nearest stock voice the search may use: {nearest:.3f}).</p>")
    return out


# -- text sections ----------------------------------------------------------------------------------------------


def _judges(run_dir: Path) -> str:
    """`voicesearch evaluate RUN --json RUN/evaluate.json`: each judge on held-out text, the voice next to the best stock voice."""
    data = _read_json(run_dir / "evaluate.json")
    if data is None:
        return ""
    title = "<h2>Judges (voicesearch evaluate)</h2>"
    if not (isinstance(data, dict) and isinstance(data.get("judges"), list) and isinstance(data.get("candidate"), dict)):
        return title + (_dict_table(data) or f"<pre>{_esc(json.dumps(data, indent=2))}</pre>")
    stock, mine = data.get("best_stock"), data["candidate"].get("scores", {})
    head = "<tr><th>judge</th><th>this voice</th>" + (f"<th>best stock voice ({_esc(stock['name'])})</th><th>Δ</th>" if stock else "")
    rows = ""
    for judge in data["judges"]:
        rows += f"<tr><th>{_esc(judge)}</th><td>{_esc(_fmt(mine.get(judge, '')))}</td>"
        if stock:
            delta = (data.get("delta") or {}).get(judge)
            rows += f"<td>{_esc(_fmt(stock['scores'].get(judge, '')))}</td><td>{'' if delta is None else f'{delta:+.4f}'}</td>"
        rows += "</tr>"
    texts = "".join(f"<li class='text'>{_esc(t)}</li>" for t in data.get("texts") or [])
    return f"{title}<table>{head}</tr>{rows}</table><p>Held-out texts:</p><ul>{texts}</ul>"


def _dict_table(data: Any) -> str:
    """{row: {column: value}} as a table, when the data has that shape."""
    if not isinstance(data, dict):
        return ""
    for value in data.values():  # results nested one level down, e.g. {"judges": {...}}
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            data = value
            break
    if not data or not all(isinstance(v, dict) for v in data.values()):
        return ""
    columns = list(dict.fromkeys(k for v in data.values() for k in v))
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join(f"<tr><th>{_esc(r)}</th>" + "".join(f"<td>{_esc(_fmt(v.get(c, '')))}</td>" for c in columns) + "</tr>"
                   for r, v in data.items())
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def _settings(config: dict[str, Any], meta: dict, last: dict[str, Any] | None) -> str:
    def named(section: dict) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in (section.get("options") or {}).items())
        return section["name"] + (f" ({opts})" if opts else "")

    target = config["target"]
    rows = [
        ("target", "demo: " + json.dumps(target["demo"]) if target.get("demo") else ", ".join(target.get("paths") or [])),
        ("strategy", named(config["strategy"])), ("scorer", named(config["scorer"])), ("space", named(config["space"])),
        ("renderer", named(config["renderer"])), ("weights", meta.get("weights_source") or "unknown"),
        ("device", meta.get("device") or config.get("device")),
        ("scorer texts", " | ".join(meta.get("scorer_texts") or [])),
        ("budget", json.dumps({k: v for k, v in config["budget"].items() if v is not None})),
        ("batch size", config.get("batch_size")), ("seed", config.get("seed")),
        ("stock voices", f"{meta['stock_voices']} in the search" if "stock_voices" in meta else ""),
        ("left out", ", ".join(config.get("exclude_voices") or []) or "none"),
    ]
    if last is not None:
        rows.append(("evaluations/s", f"{last['evals'] / max(last['seconds'], 1e-9):.2f}"))
        rows.append(("last step at", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["time"]))))
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows if v not in (None, ""))
    return (f"<h2>Settings</h2><table>{body}</table><details><summary>config.json</summary>"
            f"<pre>{_esc(json.dumps(config, indent=2))}</pre></details>")
