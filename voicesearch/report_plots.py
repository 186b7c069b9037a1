"""The report's figures, each a PNG data URI: score curves, parts, mel spectrograms, the stock-voice map.

Figures are built with matplotlib's object API (no pyplot: no global state, Agg canvas, any thread).
"""
from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np

N_FFT, HOP, N_MELS = 1024, 256, 80
RED, BLUE, GREY = "#c33", "#68a", "#9ab"


def _figure(width: float, height: float, **margins: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=90)
    fig.subplots_adjust(**margins)  # fixed margins: constrained layout costs several extra draws
    return fig


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def score_curves(history: list[dict[str, Any]], baseline: tuple[str, float] | None) -> str:
    """Every candidate's score, the batch mean and the best so far over evaluations; the best over search time."""
    evals = np.array([r["evals"] for r in history])
    secs = np.array([r["seconds"] for r in history])
    best = np.array([r["best"] for r in history])
    fig = _figure(11, 3.6, left=0.07, right=0.98, bottom=0.14, top=0.92, wspace=0.05)
    ax_e, ax_t = fig.subplots(1, 2, sharey=True)
    xs = np.concatenate([np.full(len(r["batch_scores"]), r["evals"]) for r in history])
    ys = np.concatenate([r["batch_scores"] for r in history])
    few = len(history) <= 30  # markers, or a short run's lines would be invisible dots
    ax_e.scatter(xs, ys, s=14 if len(ys) < 500 else 4, color=GREY, alpha=0.6, lw=0, label="candidates")
    ax_e.plot(evals, [r["batch_mean"] for r in history], color=BLUE, lw=1, marker="." if few else None, label="batch mean")
    ax_e.step(evals, best, where="post", color=RED, lw=2, marker="o" if few else None, ms=4, label="best so far")
    ax_t.step(secs, best, where="post", color=RED, lw=2, marker="o" if few else None, ms=4, label="best so far")
    for ax in (ax_e, ax_t):
        if baseline:
            ax.axhline(baseline[1], color="#555", ls="--", lw=1, label=f"best stock voice ({baseline[0]})")
        ax.grid(alpha=0.3)
        ax.set_xlim(left=0)
    finite = ys[np.isfinite(ys)]
    lo = float(np.percentile(finite, 1)) if len(finite) else float(best.min())
    hi = max(float(best.max()), float(finite.max()) if len(finite) else float(best.max()))
    if baseline:
        lo, hi = min(lo, baseline[1]), max(hi, baseline[1])
    pad = 0.05 * (hi - lo) + 1e-9
    ax_e.set_ylim(lo - pad, hi + pad)
    ax_e.set(xlabel="evaluations", ylabel="score (higher is better)", title="score over evaluations")
    ax_t.set(xlabel="search time (s)", title="score over time")
    ax_e.legend(fontsize=8, loc="lower right")
    return _png(fig)


def score_parts(history: list[dict[str, Any]]) -> str | None:
    """One panel per named part of a composite score: in the best voice, and the batch mean."""
    names = list(history[-1].get("best_parts") or history[-1].get("batch_parts") or {})
    if not names:
        return None
    fig = _figure(11, 2.6, left=0.07, right=0.98, bottom=0.19, top=0.88, wspace=0.25)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    few = len(history) <= 30
    for ax, name in zip(axes, names):
        rows = [r for r in history if name in (r.get("batch_parts") or {})]
        ax.plot([r["evals"] for r in rows], [np.mean(r["batch_parts"][name]) for r in rows], color=BLUE, lw=1, marker="." if few else None,
                label="batch mean")
        rows = [r for r in history if name in (r.get("best_parts") or {})]
        ax.step([r["evals"] for r in rows], [r["best_parts"][name] for r in rows], where="post", color=RED, lw=2,
                marker="o" if few else None, ms=4, label="in the best voice")
        ax.set(title=name, xlabel="evaluations")
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return _png(fig)


def mel_db(path: Path, max_seconds: float) -> tuple[np.ndarray, int]:
    """Log-mel power spectrogram (dB re. its max). torch's STFT: librosa's own JIT-compiles for seconds on first use."""
    import librosa
    import soundfile as sf
    import torch

    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    wave = torch.from_numpy(data.mean(axis=1)[: int(max_seconds * sr)].copy())
    power = torch.stft(wave, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True).abs().square().numpy()
    mel = librosa.filters.mel(sr=sr, n_fft=N_FFT, n_mels=N_MELS, fmax=min(8000, sr // 2)) @ power
    return librosa.power_to_db(mel, ref=np.max, top_db=80.0), sr


def mel_spectrograms(clips: list[tuple[str, Path]], max_seconds: float) -> str:
    """Named clips stacked on one time axis, one colour scale."""
    import librosa

    mels = [mel_db(path, max_seconds) for _, path in clips]
    height = 0.4 + 1.9 * len(clips)
    fig = _figure(11, height, left=0.07, right=0.9, top=1 - 0.3 / height, bottom=0.45 / height, hspace=0.45)
    axes = fig.subplots(len(clips), 1, squeeze=False, sharex=True)[:, 0]
    for ax, (name, _), (db, sr) in zip(axes, clips, mels):
        image = ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=-80, vmax=0, interpolation="nearest",
                          extent=(0, db.shape[1] * HOP / sr, 0, N_MELS))
        hz = librosa.mel_frequencies(N_MELS, fmax=min(8000, sr // 2))
        ticks = list(range(0, N_MELS, 16))
        ax.set_yticks(ticks, [f"{hz[i]:.0f}" for i in ticks])
        ax.set_ylabel("Hz (mel)")
        ax.set_title(name, loc="left", fontsize=10)
        ax.set_facecolor("black")  # past a clip's end: silence
    axes[-1].set_xlim(0, max(db.shape[1] * HOP / sr for db, sr in mels))
    axes[-1].set_xlabel("time (s)")
    fig.colorbar(image, ax=list(axes), format="%+.0f dB", fraction=0.03)
    return _png(fig)


def stock_map(names: list[str], styles: np.ndarray, excluded: set[str], scores: dict[str, float],
              hidden: np.ndarray | None, trajectory: list[dict[str, Any]], best: np.ndarray | None) -> str:
    """Stock voices' mean style rows on their first two principal components, with the search's path on top."""
    mean = styles.mean(0)
    _, sv, vt = np.linalg.svd(styles - mean, full_matrices=False)
    share = sv**2 / (sv**2).sum()

    def project(a: np.ndarray) -> np.ndarray:
        return (np.atleast_2d(a) - mean) @ vt[:2].T

    xy = project(styles)
    fig = _figure(8.5, 6.6, left=0.09, right=0.98, bottom=0.16, top=0.95)
    ax = fig.subplots()
    used = np.array([n not in excluded for n in names])
    color = np.array([scores.get(n, np.nan) for n in names])
    if np.isfinite(color[used]).any():
        dots = ax.scatter(xy[used, 0], xy[used, 1], c=color[used], cmap="viridis", s=36, edgecolor="k", lw=0.3)
        fig.colorbar(dots, ax=ax, label="stock voice score", shrink=0.8)
    else:
        ax.scatter(xy[used, 0], xy[used, 1], color=GREY, s=36, edgecolor="k", lw=0.3, label="stock voices")
    if (~used).any():
        ax.scatter(xy[~used, 0], xy[~used, 1], marker="X", color="#444", s=60, label="left out of the search")
    for (x, y), n in zip(xy, names):
        ax.annotate(n, (x, y), fontsize=6, color="#555", xytext=(3, 2), textcoords="offset points")
    if hidden is not None:
        ax.scatter(*project(hidden)[0], marker="*", s=260, color="gold", edgecolor="k", zorder=5, label="hidden target (demo blend)")
    if trajectory:
        t = project(np.array([r["style"] for r in trajectory], dtype=np.float32))
        ax.plot(t[:, 0], t[:, 1], color=RED, lw=1, alpha=0.6, zorder=4)
        ax.scatter(t[:, 0], t[:, 1], c=[r["evals"] for r in trajectory], cmap="Reds", s=14, zorder=5, edgecolor="none")
    if best is not None:
        ax.scatter(*project(best)[0], marker="o", s=120, facecolor="none", edgecolor=RED, lw=2.5, zorder=6, label="clone (best voice)")
    ax.set(xlabel=f"PC1 ({share[0]:.0%} of stock variance)", ylabel=f"PC2 ({share[1]:.0%})")
    ax.set_title("mean style row of each pack, projected on the stock voices' first two principal components", fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=4, frameon=False)
    ax.grid(alpha=0.3)
    return _png(fig)
