"""How short may the scoring text be? Stock-voice rankings by Resemblyzer on leading parts of the example
transcript, against the whole transcript and against held-out sentences (issue #15, the CPU default
`score_seconds`).

For every English stock voice: render the first ~3, ~5 (the CPU default) and all of the transcript, and the two
held-out judge sentences of benchmarks/clone_quality.py; Resemblyzer cosine to the target for each; Spearman
correlation of each ranking with the whole-transcript one and with the held-out one (mean over the two
sentences); CPU seconds of rendering per voice for each text.

    python benchmarks/cpu_score_text.py --out benchmarks/results/cpu_score_text.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from cpu_clone import JUDGE_TEXTS, SHARED, LoadSampler, machine, versions  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", type=Path, default=SHARED / "targets" / "kvoicewalk_example_target.wav")
    ap.add_argument("--seconds", default="3,5", help="leading parts of the transcript to compare (seconds, comma-separated)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "cpu_score_text.json")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not os.environ.get("VOICESEARCH_VOICES_DIR") and (SHARED / "kokoro-voices").is_dir():
        os.environ["VOICESEARCH_VOICES_DIR"] = str(SHARED / "kokoro-voices")
    from voicesearch import registry
    from voicesearch.audio import load_target
    from voicesearch.cpu import filter_stock, leading_text, usable_cores
    from voicesearch.kokoro.onnx_renderer import OnnxRenderer
    from voicesearch.kokoro.voices import resolve_stock_voices
    from voicesearch.renderer import Renders

    torch.set_num_threads(usable_cores())
    transcript = args.target.with_suffix(".txt").read_text().strip()
    texts = {f"first ~{s} s": leading_text(transcript, float(s)) for s in args.seconds.split(",")}
    texts["whole transcript"] = transcript
    texts.update({f"held-out {i}": t for i, t in enumerate(JUDGE_TEXTS)})
    renderer = OnnxRenderer(workers="auto")
    stock = filter_stock(resolve_stock_voices(None)[0], {"stock_langs": ["a", "b"]})
    if not all(n[0] in "ab" for n in stock.names):
        raise SystemExit(f"no English stock voices found ({', '.join(stock.names)}): set VOICESEARCH_VOICES_DIR")
    scorer = registry.get("scorers", "resemblyzer")(device="cpu")
    state = scorer.prepare(load_target([args.target], sample_rate=renderer.sample_rate))
    scores, rows = {}, {}
    with LoadSampler() as load, torch.no_grad():
        for label, text in texts.items():
            t0, c0 = time.perf_counter(), time.process_time()
            renders = Renders(renderer, stock.packs, [text])
            audio = renders.audio(0)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            scores[label] = scorer.score(renders, state).total.float().numpy()
            rows[label] = {"text": text, "audio_s_per_voice": round(float(audio.lengths.float().mean()) / audio.sample_rate, 2),
                           "render_cpu_s_per_voice": round(cpu / len(stock), 2), "render_wall_s_per_voice": round(wall / len(stock), 2),
                           "best_voice": stock.names[int(scores[label].argmax())]}
            print(label, rows[label], flush=True)
    held_out = np.mean([scores[k] for k in scores if k.startswith("held-out")], axis=0)
    for label in rows:
        rows[label]["spearman_vs_whole_transcript"] = round(float(spearmanr(scores[label], scores["whole transcript"])[0]), 3)
        rows[label]["spearman_vs_held_out_mean"] = round(float(spearmanr(scores[label], held_out)[0]), 3)
        top5 = set(np.argsort(-held_out)[:5])
        rows[label]["top5_overlap_with_held_out"] = len(top5 & set(np.argsort(-scores[label])[:5]))
    result = {"benchmark": "cpu_score_text", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "device": machine(), "versions": versions(),
              "renderer": renderer.weights_source, "scorer": "resemblyzer", "stock": f"{len(stock)} English stock voices",
              "texts": rows, "scores": {k: [round(float(v), 4) for v in s] for k, s in scores.items()}, "voices": stock.names,
              "load": load.record()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
