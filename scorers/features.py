"""KVoiceWalk's audio-feature fingerprint and feature similarity, in librosa (reference) and batched torch.

The seed (KVoiceWalk `FitnessScorer.extract_features`) describes a 24 kHz clip by 106 numbers, in this order:
RMS energy, zero-crossing rate, spectral centroid / bandwidth / rolloff / contrast (mean, std), 13 MFCCs
(mean, std each) and their deltas, chroma (overall and per pitch class), mel spectrogram, spectral
flatness, tonnetz (mean, std), tempo and beat-interval mean/std, piptrack pitch mean/std, 512-sample
chunk energy mean/std, a "harmonic ratio" (per-bin mean/std of the power spectrogram), and the
waveform's mean, std, skew and kurtosis. All frame features use n_fft 2048 / hop 512.

Feature similarity (the seed's formula): penalty = Σ_f |(x_f - t_f) / t_f| over all 106 features,
similarity = (100 - penalty) / 100, replaced by 0.01 when negative. (A target feature of exactly 0
counts 0 when the candidate's is 0 too and makes the penalty infinite otherwise; a NaN penalty, which
the seed would let through, also becomes 0.01.)

`extract_features_librosa` is the reference (one clip, CPU, librosa calls as the seed makes them).
`TorchFeatures` computes the same numbers for a padded batch in one pass on any device. It follows
librosa step by step (same filterbanks, tuning estimation, multirate CQT, onset envelope, tempo
estimate); two pieces differ: the CQT's octave-by-octave halving uses `voicesearch.resample`'s filter
instead of soxr, and the beat positions (a sequential dynamic program) run per item through librosa on
the CPU from the onset envelope and tempo computed in torch. tests/test_scorer_features.py states the
agreement it checks; benchmarks/features_speed.py measures the speed.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.profiler import record_function

from voicesearch.errors import InputError
from voicesearch.renderer import Renders
from voicesearch.resample import resample, resample_batch
from voicesearch.scorer import Scorer
from voicesearch.types import AudioBatch, ScoreResult, TargetSpeech

SAMPLE_RATE = 24000
N_FFT = 2048
HOP = 512
N_MELS = 128
N_MFCC = 13
N_CHROMA = 12
CQT_BINS_PER_OCTAVE = 36
CQT_OCTAVES = 7
FLOOR = 0.01


def _names() -> list[str]:
    names = ["rms_energy", "zero_crossing_rate"]
    for f in ("spectral_centroid", "spectral_bandwidth", "spectral_rolloff", "spectral_contrast"):
        names += [f"{f}_mean", f"{f}_std"]
    names += [f"mfcc{i}_{s}" for i in range(1, N_MFCC + 1) for s in ("mean", "std")]
    names += [f"mfcc{i}_delta_{s}" for i in range(1, N_MFCC + 1) for s in ("mean", "std")]
    names += ["chroma_mean", "chroma_std"]
    names += [f"chroma_{i}_{s}" for i in range(1, N_CHROMA + 1) for s in ("mean", "std")]
    names += ["mel_spec_mean", "mel_spec_std", "spectral_flatness_mean", "spectral_flatness_std",
              "tonnetz_mean", "tonnetz_std", "tempo", "beat_mean", "beat_std", "pitch_mean", "pitch_std",
              "energy_mean", "energy_std", "harmonic_ratio", "audio_mean", "audio_std", "audio_skew", "audio_kurtosis"]
    return names


FEATURE_NAMES: tuple[str, ...] = tuple(_names())


# ----------------------------------------------------------------------------------------------
# Similarity (shared by both implementations)


def feature_penalty(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Σ |(x - t) / t| over features: (B, F) against (F,) -> (B,). 0/0 counts 0; x/0 counts inf."""
    target = target.to(features.device, features.dtype)
    diff = (features - target).abs()
    rel = torch.where(target != 0, diff / target.abs().clamp_min(torch.finfo(features.dtype).tiny),
                      torch.where(diff == 0, torch.zeros_like(diff), torch.full_like(diff, math.inf)))
    return rel.sum(-1)


def feature_similarity(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The seed's (100 - penalty) / 100, replaced by 0.01 when below 0 (or NaN)."""
    sim = (100.0 - feature_penalty(features, target)) / 100.0
    return torch.where(torch.isnan(sim) | (sim < 0), torch.full_like(sim, FLOOR), sim)


# ----------------------------------------------------------------------------------------------
# Reference: librosa, one clip


def extract_features_librosa(audio: np.ndarray, sr: int = SAMPLE_RATE) -> dict[str, float]:
    """The seed's 106 features of one mono clip (float32 numpy) as an ordered dict."""
    import librosa
    import scipy.stats

    y = np.asarray(audio, dtype=np.float32)
    if y.ndim > 1:
        y = y.mean(axis=-1)
    spec = dict(sr=sr, n_fft=N_FFT, hop_length=HOP)
    out: dict[str, float] = {}

    def stats(name: str, values: np.ndarray) -> None:
        out[f"{name}_mean"], out[f"{name}_std"] = float(np.mean(values)), float(np.std(values))

    out["rms_energy"] = float(np.sqrt(np.mean(y**2)))
    out["zero_crossing_rate"] = float(np.mean(librosa.feature.zero_crossing_rate(y)))
    stats("spectral_centroid", librosa.feature.spectral_centroid(y=y, **spec)[0])
    stats("spectral_bandwidth", librosa.feature.spectral_bandwidth(y=y, **spec)[0])
    stats("spectral_rolloff", librosa.feature.spectral_rolloff(y=y, **spec)[0])
    stats("spectral_contrast", librosa.feature.spectral_contrast(y=y, **spec))
    mfcc = librosa.feature.mfcc(y=y, n_mfcc=N_MFCC, **spec)
    for i, row in enumerate(mfcc, 1):
        stats(f"mfcc{i}", row)
    for i, row in enumerate(librosa.feature.delta(mfcc), 1):
        stats(f"mfcc{i}_delta", row)
    chroma = librosa.feature.chroma_stft(y=y, **spec)
    stats("chroma", chroma)
    for i, row in enumerate(chroma, 1):
        stats(f"chroma_{i}", row)
    stats("mel_spec", librosa.feature.melspectrogram(y=y, **spec))
    stats("spectral_flatness", librosa.feature.spectral_flatness(y=y, n_fft=N_FFT, hop_length=HOP)[0])
    stats("tonnetz", librosa.feature.tonnetz(y=y, sr=sr))
    tempo, beats = librosa.beat.beat_track(y=y, sr=sr)
    out["tempo"] = float(np.asarray(tempo).reshape(-1)[0])
    intervals = np.diff(librosa.frames_to_time(beats, sr=sr))
    out["beat_mean"], out["beat_std"] = (float(np.mean(intervals)), float(np.std(intervals))) if len(intervals) else (0.0, 0.0)
    pitches, mags = librosa.piptrack(y=y, **spec)
    strongest = pitches[mags.argmax(axis=0), np.arange(mags.shape[1])]
    voiced = strongest[strongest > 0]
    out["pitch_mean"], out["pitch_std"] = (float(np.mean(voiced)), float(np.std(voiced))) if len(voiced) else (0.0, 0.0)
    chunks = np.pad(np.abs(y), (0, -len(y) % HOP)).reshape(-1, HOP).sum(axis=1)
    stats("energy", chunks)
    power = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP)) ** 2
    mean, std = power.mean(axis=1), power.std(axis=1)
    out["harmonic_ratio"] = float(np.mean(np.divide(mean, std, out=np.zeros_like(mean), where=std != 0)))
    out["audio_mean"], out["audio_std"] = float(np.mean(y)), float(np.std(y))
    out["audio_skew"], out["audio_kurtosis"] = float(scipy.stats.skew(y)), float(scipy.stats.kurtosis(y))
    assert tuple(out) == FEATURE_NAMES
    return out


def features_librosa(audio: AudioBatch) -> torch.Tensor:
    """(B, 106) float64 through the reference, item by item."""
    rows = []
    for i in range(len(audio)):
        wave = audio.item(i).detach().float().cpu()
        if audio.sample_rate != SAMPLE_RATE:
            wave = resample(wave, audio.sample_rate, SAMPLE_RATE)
        rows.append(list(extract_features_librosa(wave.numpy()).values()))
    return torch.tensor(rows, dtype=torch.float64).reshape(len(audio), len(FEATURE_NAMES))


# ----------------------------------------------------------------------------------------------
# Batched torch
#
# torch.stft returns (B, bins, frames) as a view of frame-major memory, so sums and selections over bins run
# along contiguous memory; the pitch tracker and the CQT work on (B, frames, bins) directly. Each feature group
# runs in a profiler range "features:<group>" (benchmarks/features_speed.py lists them).


def _masked_stats(x: torch.Tensor, mask: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population std of x over `dims` where mask (broadcastable) is true."""
    mask = mask.to(x.dtype).expand_as(x)
    n = mask.sum(dims).clamp_min(1)
    mean = (x * mask).sum(dims) / n
    centred = (x - mean.reshape(mean.shape + (1,) * len(dims))) * mask
    return mean, (centred.pow(2).sum(dims) / n).sqrt()


def _power_to_db(x: torch.Tensor, mask: torch.Tensor, top_db: float = 80.0) -> torch.Tensor:
    """librosa.power_to_db(ref=1, amin=1e-10, top_db) with the top taken over each item's valid frames."""
    db = 10.0 * torch.log10(x.clamp_min(1e-10))
    top = torch.where(mask.expand_as(db), db, torch.full_like(db, -math.inf)).flatten(1).amax(1)
    return torch.maximum(db, (top - top_db).reshape(-1, *([1] * (db.dim() - 1))))


def _normalize(x: torch.Tensor, dim: int, p: float) -> torch.Tensor:
    """librosa.util.normalize: columns whose norm is below `tiny` are left as they are."""
    norm = x.abs().amax(dim, keepdim=True) if p == math.inf else x.abs().sum(dim, keepdim=True)
    return x / torch.where(norm < torch.finfo(x.dtype).tiny, torch.ones_like(norm), norm)


def _piptrack(S: torch.Tensor, peak: torch.Tensor, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
    """librosa.piptrack (fmin 150, fmax 4000, threshold 0.1) on bins [lo, hi) of S (B, frames, bins), given each
    frame's maximum over all bins `peak` (B, frames, 1): pitches and mags (B, frames, hi - lo), 0 off the peaks."""
    x = S[..., lo - 1 : hi + 1]  # one bin either side for the stencils
    centre, below, above = x[..., 1:-1], x[..., :-2], x[..., 2:]
    b = (above - below) / 2  # np.gradient, and the parabola's linear term
    a = above + below - 2 * centre
    shift = torch.where(b.abs() < a.abs(), -b / a, 0.0)
    kept = torch.where(x > 0.1 * peak, x, 0.0)
    is_peak = (kept[..., 1:-1] > kept[..., :-2]) & (kept[..., 1:-1] >= kept[..., 2:])
    bins = torch.arange(lo, hi, device=S.device, dtype=S.dtype)
    pitches = torch.where(is_peak, (bins + shift) * (SAMPLE_RATE / N_FFT), 0.0)
    mags = torch.where(is_peak, centre + 0.5 * b * shift, 0.0)
    return pitches, mags


def _autocorrelate(x: torch.Tensor, scipy_fft: bool | None = None) -> torch.Tensor:
    """librosa.autocorrelate along the last axis (lags 0 .. n-1, through an FFT of scipy's fast length >= 2n - 1).
    On the CPU (`scipy_fft` None) through scipy.fft: torch's CPU FFT took 2-4x as long on these shapes."""
    import scipy.fft

    n = x.shape[-1]
    n_fft = scipy.fft.next_fast_len(2 * n - 1, real=True)
    if scipy_fft is None:
        scipy_fft = x.device.type == "cpu"
    if scipy_fft:
        workers = torch.get_num_threads()
        spectrum = scipy.fft.rfft(x.numpy(), n=n_fft, axis=-1, workers=workers)
        power = np.square(spectrum.real) + np.square(spectrum.imag)
        return torch.from_numpy(scipy.fft.irfft(power, n=n_fft, axis=-1, workers=workers)[..., :n])
    spectrum = torch.fft.rfft(x, n=n_fft)
    return torch.fft.irfft(spectrum.real.square() + spectrum.imag.square(), n=n_fft)[..., :n]


def _tuning(pitches: torch.Tensor, mags: torch.Tensor, frame_mask: torch.Tensor, bins_per_octave: int,
            edges: torch.Tensor) -> torch.Tensor:
    """librosa.estimate_tuning from piptrack output (B, frames, bins): (B,) tuning in fractions of a bin, 0.01 steps.

    `edges` are the histogram's 101 float64 edges. Only each item's voiced entries (a few % of the grid) are
    sorted and binned: they are moved to the front of a row as wide as the largest count.
    """
    B = pitches.shape[0]
    voiced = ((pitches > 0) & frame_mask[:, :, None]).flatten(1)
    count = voiced.sum(1)
    width = max(int(count.max()), 1)
    rows, cols = voiced.nonzero(as_tuple=True)  # row-major order: each row's entries are consecutive
    slots = torch.arange(len(rows), device=rows.device) - (count.cumsum(0) - count)[rows]
    mag = mags.new_full((B, width), math.inf)
    mag[rows, slots] = mags.flatten(1)[rows, cols]
    pitch = pitches.new_ones((B, width))
    pitch[rows, slots] = pitches.flatten(1)[rows, cols]
    ordered = mag.sort(1).values
    lo_i = ((count - 1).clamp_min(0) // 2)[:, None]
    hi_i = (count // 2).clamp_max(width - 1)[:, None]
    median = (ordered.gather(1, lo_i) + ordered.gather(1, hi_i))[:, 0] / 2
    chosen = (torch.arange(width, device=mag.device)[None] < count[:, None]) & (mag >= median[:, None])
    freqs = torch.where(chosen, pitch, 1.0)
    residual = torch.remainder(bins_per_octave * torch.log2(freqs / 27.5), 1.0)
    residual = torch.where(residual >= 0.5, residual - 1.0, residual).double().contiguous()
    index = (torch.bucketize(residual, edges, right=True) - 1).clamp(0, 99)
    counts = torch.zeros(B, 100, device=pitches.device, dtype=torch.float64)
    counts.scatter_add_(1, index, chosen.double())
    tuning = edges[counts.argmax(1)]
    return torch.where(chosen.any(1), tuning, torch.zeros_like(tuning))


class TorchFeatures(nn.Module):
    """The 106 seed features for a batch: `forward(AudioBatch) -> (B, 106)` float64 (see module doc)."""

    HALVING_BLOCK = 32  # outputs per row of the 2:1 decimation matmul
    CPU_SLICE_SAMPLES = 8 * 14 * SAMPLE_RATE  # clips x samples per forward on a CPU (8 clips of 14 s)

    def __init__(self) -> None:
        super().__init__()
        import librosa
        import scipy.fft

        from voicesearch.resample import _kernel as resample_kernel

        sr = SAMPLE_RATE
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True), persistent=False)
        self.register_buffer("freqs", torch.from_numpy(librosa.fft_frequencies(sr=sr, n_fft=N_FFT)).float(), persistent=False)
        self.register_buffer("mel", torch.from_numpy(librosa.filters.mel(sr=sr, n_fft=N_FFT, n_mels=N_MELS)), persistent=False)
        dct = scipy.fft.dct(np.eye(N_MELS), type=2, norm="ortho", axis=0)[:N_MFCC]
        self.register_buffer("dct", torch.from_numpy(dct).float(), persistent=False)
        self.register_buffer("cq_to_chroma", torch.from_numpy(
            librosa.filters.cq_to_chroma(CQT_BINS_PER_OCTAVE * CQT_OCTAVES, bins_per_octave=CQT_BINS_PER_OCTAVE)), persistent=False)
        self.register_buffer("tonnetz_map", torch.from_numpy(self._tonnetz_map()).float(), persistent=False)
        self.register_buffer("tuning_edges", torch.from_numpy(np.linspace(-0.5, 0.5, 101)), persistent=False)
        # voicesearch.resample's 2:1 filter (the same call resample(y, 2, 1) makes) as a block-Toeplitz matrix
        kernel, self.halving_pad = resample_kernel(2, 1, 16, 0.945, 14.769656459379492)
        taps, S = kernel.reshape(-1), self.HALVING_BLOCK
        halving = torch.zeros(2 * S + len(taps) - 2, S)
        for s in range(S):
            halving[2 * s : 2 * s + len(taps), s] = taps
        self.register_buffer("halving", halving, persistent=False)
        # librosa.feature.tempo's constants: window (8 s of frames), BPM per lag, log-normal prior around 120 BPM
        win = int(librosa.time_to_frames(8.0, sr=sr, hop_length=HOP))
        self.register_buffer("ac_window", torch.from_numpy(librosa.filters.get_window("hann", win, fftbins=True)), persistent=False)
        bpms = librosa.tempo_frequencies(win, hop_length=HOP, sr=sr)
        with np.errstate(invalid="ignore"):
            prior = -0.5 * (np.log2(bpms) - np.log2(120.0)) ** 2
        prior[: int(np.argmax(bpms < 320.0))] = -np.inf
        self.register_buffer("tempo_bpms", torch.from_numpy(bpms), persistent=False)
        self.register_buffer("tempo_prior", torch.from_numpy(prior), persistent=False)
        self.contrast_bands = self._contrast_bands(self.freqs.numpy())
        fft_freqs = self.freqs.numpy()
        band = np.flatnonzero((fft_freqs >= 150.0) & (fft_freqs < 4000.0))
        self.pitch_bins = (int(band[0]), int(band[-1]) + 1)
        self._chroma_fb: dict[int, torch.Tensor] = {}
        self._cqt: dict[int, tuple[list[torch.Tensor], torch.Tensor]] = {}

    # -- fixed tables ---------------------------------------------------------------------------
    @staticmethod
    def _tonnetz_map() -> np.ndarray:
        pitch_class = np.arange(N_CHROMA)
        scale = np.array([7 / 6, 7 / 6, 3 / 2, 3 / 2, 2 / 3, 2 / 3])
        angle = np.pi * (scale[:, None] * pitch_class[None] - np.array([0.5, 0, 0.5, 0, 0.5, 0])[:, None])
        return np.array([1, 1, 1, 1, 0.5, 0.5])[:, None] * np.cos(angle)

    @staticmethod
    def _contrast_bands(freq: np.ndarray, fmin: float = 200.0, n_bands: int = 6, quantile: float = 0.02) -> list[tuple[int, int, int]]:
        """(first bin, end bin, quantile count) per octave band, as librosa.feature.spectral_contrast builds them."""
        edges = np.concatenate([[0.0], fmin * 2.0 ** np.arange(n_bands + 1)])
        bands = []
        for k in range(n_bands + 1):
            inside = np.flatnonzero((freq >= edges[k]) & (freq <= edges[k + 1]))
            first = inside[0] - 1 if k > 0 else inside[0]
            last = len(freq) if k == n_bands else inside[-1] + 1
            q = max(1, int(np.rint(quantile * (last - first))))
            if k < n_bands:
                last -= 1  # the band's own top bin is the next band's bottom
            bands.append((int(first), int(last), q))
        return bands

    def _chroma_filters(self, tuning: torch.Tensor) -> torch.Tensor:
        """(B, 12, 1025) chroma filterbanks for each item's tuning."""
        import librosa

        keys = torch.round(tuning * 100).long().tolist()
        for k in set(keys) - set(self._chroma_fb):
            fb = librosa.filters.chroma(sr=SAMPLE_RATE, n_fft=N_FFT, tuning=k / 100)
            self._chroma_fb[k] = torch.from_numpy(fb).to(self.freqs.device)
        return torch.stack([self._chroma_fb[k] for k in keys])

    def _cqt_bases(self, key: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-octave CQT filters (as librosa.vqt builds them) and all filter lengths, for one tuning.

        librosa multiplies the rfft of each frame by sparse FFT-domain filters; that linear map applied to the frame
        itself is an (n_fft, 36) complex matrix, kept here as (n_fft, 72) real [re | im]: one dense matmul per
        octave instead of an FFT and a product with a mostly-zero basis.
        """
        if key not in self._cqt:
            import librosa

            n_bins = CQT_BINS_PER_OCTAVE * CQT_OCTAVES
            fmin = librosa.note_to_hz("C1") * 2.0 ** (key / 100 / CQT_BINS_PER_OCTAVE)
            freqs = librosa.interval_frequencies(n_bins, fmin=fmin, intervals="equal", bins_per_octave=CQT_BINS_PER_OCTAVE)
            bases = []
            for octave in range(CQT_OCTAVES):
                sub = freqs[n_bins - CQT_BINS_PER_OCTAVE * (octave + 1) : n_bins - CQT_BINS_PER_OCTAVE * octave]
                rate = SAMPLE_RATE / 2**octave
                basis, lengths = librosa.filters.wavelet(freqs=sub, sr=rate, norm=1, pad_fft=True, window="hann")
                n_fft = basis.shape[1]
                basis = basis * (lengths[:, None] / n_fft)
                fft_basis = np.fft.fft(basis, n=n_fft, axis=1)[:, : n_fft // 2 + 1]
                fft_basis = librosa.util.sparsify_rows(fft_basis, quantile=0.01).toarray() * np.sqrt(2.0**octave)
                rfft = np.exp(-2j * np.pi * (np.outer(np.arange(n_fft // 2 + 1), np.arange(n_fft)) % n_fft) / n_fft)
                time_basis = fft_basis @ rfft  # (36, n_fft): response = Σ_n frame[n] · time_basis[:, n]
                matrix = np.concatenate([time_basis.real, time_basis.imag]).T.astype(np.float32)
                bases.append(torch.from_numpy(np.ascontiguousarray(matrix)).to(self.freqs.device))
            lengths, _ = librosa.filters.wavelet_lengths(freqs=freqs, sr=SAMPLE_RATE, window="hann")
            self._cqt[key] = (bases, torch.from_numpy(lengths).float().to(self.freqs.device))
        return self._cqt[key]

    # -- feature groups -------------------------------------------------------------------------
    @staticmethod
    def _zero_crossing_rate(wave: torch.Tensor, lengths: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """Frames of 2048 over the edge-padded clip; a crossing is a sign-bit change (|x| <= 1e-10 is +0).

        Edge padding repeats the end samples and adds no crossing: a frame counts the clip's own crossings between
        its first and last sample, read off a running count.
        """
        B, T = wave.shape
        negative = wave < -1e-10
        change = (negative[:, 1:] != negative[:, :-1]) & (torch.arange(T - 1, device=wave.device)[None] < (lengths - 1)[:, None])
        running = torch.nn.functional.pad(change.cumsum(1, dtype=torch.int32), (1, 0))  # crossings before sample k
        starts = torch.arange(frame_mask.shape[1], device=wave.device) * HOP - N_FFT // 2  # in clip samples
        counts = running[:, (starts + N_FFT - 1).clamp(0, T - 1)] - running[:, starts.clamp(0, T - 1)]
        return _masked_stats(counts.double() / N_FFT, frame_mask, (1,))[0]

    def _contrast(self, mag: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """librosa.feature.spectral_contrast: per band, the mean of its q largest over the mean of its q smallest, in dB."""
        peaks, valleys = [], []
        for first, last, q in self.contrast_bands:
            band = mag[:, first:last]
            if q == 1:
                valleys.append(band.amin(1))
                peaks.append(band.amax(1))
            else:
                valleys.append(band.topk(q, 1, largest=False).values.mean(1))
                peaks.append(band.topk(q, 1).values.mean(1))
        mask = frame_mask[:, None, :]
        return _power_to_db(torch.stack(peaks, 1), mask) - _power_to_db(torch.stack(valleys, 1), mask)

    @staticmethod
    def _delta(x: torch.Tensor, n_frames: torch.Tensor) -> torch.Tensor:
        """librosa.feature.delta (Savitzky-Golay, width 9, order 1, mode 'interp') along the last axis."""
        B, C, F = x.shape
        kernel = torch.arange(-4, 5, dtype=x.dtype, device=x.device) / 60.0  # Σ k·x[i+k] / Σ k²
        inner = torch.nn.functional.conv1d(x.reshape(B * C, 1, F), kernel.reshape(1, 1, 9), padding=4).reshape(B, C, F)
        # With a first-order fit the edge frames take the slope of the first/last full window.
        frame = torch.arange(F, device=x.device)[None]
        lo = torch.full_like(n_frames, 4)[:, None]
        hi = (n_frames - 5).clamp_min(4)[:, None]
        index = torch.minimum(torch.maximum(frame, lo), hi)
        return inner.gather(2, index[:, None, :].expand(B, C, F))

    def _halve(self, y: torch.Tensor) -> torch.Tensor:
        """voicesearch.resample.resample(y, 2, 1), as a matmul over blocks of inputs (a one-channel conv1d is slow on CPUs)."""
        S = self.HALVING_BLOCK
        span, length = self.halving.shape[0], y.shape[1]
        target = (length + 1) // 2
        total = 2 * S * -(-target // S) + span - 2 * S
        padded = torch.nn.functional.pad(y, (self.halving_pad, total - length - self.halving_pad))
        return torch.matmul(padded.unfold(1, span, 2 * S), self.halving).flatten(1)[:, :target]

    def _tonnetz(self, wave: torch.Tensor, lengths: torch.Tensor, tuning: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """librosa.feature.tonnetz(y): multirate CQT (7 octaves x 36 bins) -> chroma -> tonal centroids; mean, std."""
        keys = torch.round(tuning * 100).long().tolist()
        tables = [self._cqt_bases(k) for k in keys]
        magnitudes, frames = [], []
        y, n, hop = wave, lengths, HOP
        for octave in range(CQT_OCTAVES):
            basis = torch.stack([t[0][octave] for t in tables])  # (B, n_fft, 72)
            n_fft = basis.shape[1]
            # the frames of torch.stft(center=True, constant padding, rectangular window), through the filters
            padded = torch.nn.functional.pad(y, (n_fft // 2, n_fft // 2))
            response = torch.matmul(padded.unfold(1, n_fft, hop), basis)  # (B, frames, 72)
            magnitudes.append(torch.hypot(response[..., :CQT_BINS_PER_OCTAVE], response[..., CQT_BINS_PER_OCTAVE:]))
            frames.append(1 + n // hop)
            if octave < CQT_OCTAVES - 1:
                hop //= 2
                n = (n + 1) // 2
                y = self._halve(y) * math.sqrt(2.0)
                y = y * (torch.arange(y.shape[1], device=y.device)[None] < n[:, None])
        n_frames = torch.stack(frames).amin(0)
        width = min(m.shape[1] for m in magnitudes)
        cqt = torch.cat([m[:, :width] for m in reversed(magnitudes)], -1)  # (B, frames, 252), low to high
        cqt = cqt / torch.stack([t[1] for t in tables])[:, None, :].sqrt()
        chroma = _normalize(torch.matmul(cqt, self.cq_to_chroma.T).clamp_min(0), -1, math.inf)
        ton = torch.matmul(_normalize(chroma, -1, 1), self.tonnetz_map.T)  # (B, frames, 6)
        mask = torch.arange(width, device=wave.device)[None] < n_frames[:, None]
        return _masked_stats(ton, mask[:, :, None], (1, 2))

    def _tempo(self, onset: torch.Tensor, n_frames: torch.Tensor) -> torch.Tensor:
        """(B,) librosa.feature.tempo of each item's onset envelope (float32, its first n frames), batched: the mean
        over frames of the max-normalised autocorrelation of 8 s Hann-windowed stretches (the envelope padded with
        numpy's linear ramps to 0), weighted by the log-normal prior; the best lag's BPM."""
        B, F = onset.shape
        win = self.ac_window.shape[0]
        pad = win // 2
        frame = torch.arange(F + pad, device=onset.device)[None]
        env = torch.nn.functional.pad(onset.float(), (0, pad))
        env = torch.where(frame < n_frames[:, None], env, 0.0)
        # np.pad(mode="linear_ramp", end_values=0) on float32: ramps computed in float64, stored as float32
        ramp = torch.arange(pad, device=onset.device, dtype=torch.float64)
        left = (ramp * (env[:, :1].double() / pad)).float()
        last = env.gather(1, (n_frames - 1)[:, None]).double()
        after = (frame - n_frames[:, None]).clamp(0, pad - 1)
        right = ((pad - 1 - after) * (last / pad)).float()
        env = torch.where((frame >= n_frames[:, None]) & (frame < n_frames[:, None] + pad), right, env)
        stretches = torch.cat([left, env], 1).double().unfold(1, win, 1)[:, :F] * self.ac_window
        autocorr = _autocorrelate(stretches)  # (B, frames, lags)
        # each frame scaled to peak 1 (librosa.util.normalize), then the mean over the item's frames: one matmul
        peak = autocorr.abs().amax(-1)
        peak = torch.where(peak < torch.finfo(peak.dtype).tiny, 1.0, peak)
        weights = (torch.arange(F, device=onset.device)[None] < n_frames[:, None]) / (peak * n_frames[:, None])
        tempogram = torch.matmul(weights[:, None, :], autocorr)[:, 0]
        return self.tempo_bpms[(torch.log1p(1e6 * tempogram) + self.tempo_prior).argmax(1)]

    def _beats(self, onset: torch.Tensor, n_frames: torch.Tensor) -> torch.Tensor:
        """(B, 3) tempo, beat-interval mean and std: the tempo batched (`_tempo`), librosa's beat DP per item on the CPU."""
        import librosa

        rows = []
        bpms = self._tempo(onset, n_frames).tolist()
        for env, n, bpm in zip(onset.detach().float().cpu().numpy(), n_frames.tolist(), bpms):
            tempo, beats = librosa.beat.beat_track(onset_envelope=env[:n], sr=SAMPLE_RATE, hop_length=HOP, bpm=bpm)
            intervals = np.diff(beats * HOP / SAMPLE_RATE)
            rows.append([float(np.asarray(tempo).reshape(-1)[0]),
                         float(np.mean(intervals)) if len(intervals) else 0.0,
                         float(np.std(intervals)) if len(intervals) else 0.0])
        return torch.tensor(rows, dtype=torch.float64, device=onset.device)

    # -- all together ---------------------------------------------------------------------------
    def forward(self, audio: AudioBatch) -> torch.Tensor:
        audio = AudioBatch(audio.wave.to(self.freqs.device, torch.float32), audio.lengths.to(self.freqs.device), audio.sample_rate)
        audio = resample_batch(audio, SAMPLE_RATE)
        wave, lengths = audio.wave, audio.lengths
        if int(lengths.min()) < 9 * HOP:
            raise InputError(f"audio shorter than {9 * HOP / SAMPLE_RATE:.2f} s cannot be described by the feature set; render longer text")
        if wave.device.type != "cpu" or len(wave) * wave.shape[1] <= self.CPU_SLICE_SAMPLES:
            return self._features(wave, lengths)
        # On a CPU, slices of the batch (each cut to its own longest clip) keep the large tensors under glibc's mmap
        # threshold (32 MiB), so their memory is reused instead of mapped and page-faulted afresh each time: system
        # time per call of 16 clips of 14 s 0.6-1.7 s -> 0.2 s (benchmarks/features_speed.py). Items are independent.
        per = max(1, self.CPU_SLICE_SAMPLES // wave.shape[1])
        return torch.cat([self._features(wave[i : i + per, : int(lengths[i : i + per].max())], lengths[i : i + per])
                          for i in range(0, len(wave), per)])

    def _features(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, 106) for 24 kHz float32 clips (B, T) on the module's device, each at least 9 hops long."""
        B, T = wave.shape
        in_clip = torch.arange(T, device=wave.device)[None] < lengths[:, None]
        wave = wave * in_clip
        n_frames = 1 + lengths // HOP
        with record_function("features:spectrogram"):
            spec = torch.stft(wave, N_FFT, HOP, window=self.window, center=True, pad_mode="constant", return_complex=True)
            mag = spec.abs()  # (B, bins, frames), frame-major in memory
            power = mag.pow(2)
        F = spec.shape[-1]
        frame_mask = torch.arange(F, device=wave.device)[None] < n_frames[:, None]
        fmask = frame_mask[:, None, :]
        cols: list[torch.Tensor] = []

        def add(*values: torch.Tensor) -> None:
            cols.extend(v.double().reshape(B, -1) for v in values)

        # raw power sums of the waveform (0 past each end), in float64: the moments below need no mask
        x = wave.double()
        n = lengths.double()
        x2 = x.square()
        s1, s2, s3, s4 = x.sum(1) / n, x2.sum(1) / n, (x2 * x).sum(1) / n, x2.square().sum(1) / n
        add(s2.sqrt())
        with record_function("features:zero_crossings"):
            add(self._zero_crossing_rate(wave, lengths, frame_mask))
        with record_function("features:centroid_bandwidth_rolloff"):
            # librosa normalises each frame to sum 1 (a frame summing below `tiny` is left as it is)
            total = mag.sum(1)
            total = torch.where(total < torch.finfo(total.dtype).tiny, 1.0, total)
            centroid = torch.matmul(self.freqs, mag) / total
            bandwidth = ((mag * (self.freqs[None, :, None] - centroid[:, None]).square()).sum(1) / total).sqrt()
            # the first bin whose running sum reaches 85 % of the frame's
            cumulative = mag.transpose(1, 2).cumsum(-1).contiguous()
            rolloff = self.freqs[torch.searchsorted(cumulative, 0.85 * cumulative[..., -1:]).squeeze(-1).clamp_max(N_FFT // 2)]
            for values in (centroid, bandwidth, rolloff):
                add(*_masked_stats(values, frame_mask, (1,)))
        with record_function("features:contrast"):
            add(*_masked_stats(self._contrast(mag, frame_mask), fmask, (1, 2)))

        with record_function("features:mel_mfcc"):
            mel = torch.matmul(power.transpose(1, 2), self.mel.T).transpose(1, 2)  # (B, mels, frames), frame-major
            mel_db = _power_to_db(mel, fmask)
            mfcc = torch.matmul(self.dct, mel_db)
            add(torch.stack(_masked_stats(mfcc, fmask, (2,)), -1))
            add(torch.stack(_masked_stats(self._delta(mfcc, n_frames), fmask, (2,)), -1))

        lo, hi = self.pitch_bins
        mag_t, power_t = mag.transpose(1, 2), power.transpose(1, 2)  # (B, frames, bins), contiguous
        with record_function("features:chroma"):
            tuning = _tuning(*_piptrack(power_t, power_t.amax(-1, keepdim=True), lo, hi), frame_mask, N_CHROMA, self.tuning_edges)
            chroma = _normalize(torch.matmul(self._chroma_filters(tuning), power), 1, math.inf)
            add(*_masked_stats(chroma, fmask, (1, 2)))
            add(torch.stack(_masked_stats(chroma, fmask, (2,)), -1))
        add(*_masked_stats(mel, fmask, (1, 2)))
        with record_function("features:flatness"):
            floor_power = power.clamp_min(1e-10)
            flatness = floor_power.log().mean(1).exp() / floor_power.mean(1)
            add(*_masked_stats(flatness, frame_mask, (1,)))
        with record_function("features:tonnetz"):
            pitches, mags = _piptrack(mag_t, mag_t.amax(-1, keepdim=True), lo, hi)  # also the seed's pitch track
            add(*self._tonnetz(wave, lengths, _tuning(pitches, mags, frame_mask, CQT_BINS_PER_OCTAVE, self.tuning_edges)))

        with record_function("features:beats"):
            rise = (mel_db[:, :, 1:] - mel_db[:, :, :-1]).clamp_min(0)
            lower = rise.topk(N_MELS // 2 + 1, 1, largest=False).values  # ascending
            onset = (lower[:, -2] + lower[:, -1]) / 2  # np.median over 128 bands
            onset = torch.nn.functional.pad(onset, (1 + N_FFT // (2 * HOP), 0))[:, :F]
            add(self._beats(onset, n_frames))

        with record_function("features:pitch"):
            strongest = pitches.gather(-1, mags.argmax(-1, keepdim=True))[..., 0]
            # A frame with no peak has all-zero mags: librosa's argmax then lands on bin 0, pitch 0.
            voiced = (strongest > 0) & (mags.amax(-1) > 0) & frame_mask
            add(*_masked_stats(strongest, voiced, (1,)))

        with record_function("features:energy_power_moments"):
            n_chunks = (lengths + HOP - 1) // HOP
            chunks = torch.nn.functional.pad(wave.abs(), (0, -T % HOP)).reshape(B, -1, HOP).sum(2)
            chunk_mask = torch.arange(chunks.shape[1], device=wave.device)[None] < n_chunks[:, None]
            add(*_masked_stats(chunks, chunk_mask, (1,)))

            valid = frame_mask.to(power.dtype)[:, :, None]
            count = valid.sum(1, keepdim=True)
            p_mean = torch.matmul(power, valid) / count  # (B, bins, 1): per-bin mean over valid frames
            p_std = (torch.matmul((power - p_mean).square(), valid) / count).sqrt()
            p_mean, p_std = p_mean[..., 0], p_std[..., 0]
            add(torch.where(p_std != 0, p_mean / torch.where(p_std != 0, p_std, torch.ones_like(p_std)), torch.zeros_like(p_mean)).mean(1))

            mean = s1  # central moments from the raw ones
            m2 = s2 - mean**2
            m3 = s3 - 3 * mean * s2 + 2 * mean**3
            m4 = s4 - 4 * mean * s3 + 6 * mean**2 * s2 - 3 * mean**4
            add(mean, m2.sqrt(), m3 / m2.pow(1.5), m4 / m2.pow(2) - 3.0)
        out = torch.cat(cols, 1)
        assert out.shape[1] == len(FEATURE_NAMES)
        return out


# ----------------------------------------------------------------------------------------------
# Scorer


class FeatureScorer(Scorer):
    """KVoiceWalk's feature similarity to the target: 1 - Σ relative feature differences / 100 (floor 0.01).

    Options: `backend` ("torch": batched on the scorer's device | "librosa": the CPU reference).
    The target's features come from its first clip. Parts: feature_similarity, feature_penalty.
    """

    name: ClassVar[str] = "features"

    def __init__(self, device: str | torch.device = "cpu", backend: str = "torch", **options: Any):
        super().__init__(device=device, **options)
        if backend not in ("torch", "librosa"):
            raise InputError(f"features backend must be 'torch' or 'librosa', got {backend!r}")
        self.backend = backend
        self._torch: TorchFeatures | None = None

    def extract(self, audio: AudioBatch) -> torch.Tensor:
        """(B, 106) float64 features on the scorer's device."""
        if self.backend == "librosa":
            return features_librosa(audio).to(self.device)
        if self._torch is None:
            self._torch = TorchFeatures().to(self.device)
        with torch.no_grad():
            return self._torch(audio)

    def prepare(self, target: TargetSpeech) -> torch.Tensor:
        if not target.clips:
            raise InputError("the target has no audio clips: give at least one clip of the speaker")
        return self.extract(AudioBatch.from_list([target.clips[0].float()], target.sample_rate))[0]

    def similarity(self, audio: AudioBatch, target_features: torch.Tensor) -> ScoreResult:
        feats = self.extract(audio)
        penalty = feature_penalty(feats, target_features)
        sim = feature_similarity(feats, target_features)
        return ScoreResult(total=sim.float(), parts={"feature_similarity": sim.float(), "feature_penalty": penalty.float()})

    def score(self, renders: Renders, state: torch.Tensor) -> ScoreResult:
        return self.similarity(renders.audio(0, sample_rate=SAMPLE_RATE), state)
