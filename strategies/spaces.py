"""Two low-dimensional spaces over the stock voices: principal components and stock mixtures.

`pca` — x (k,) are coordinates along the stock voices' principal axes, in units of each axis's standard
deviation (so `scale()` is all ones and x ~ N(0, I) covers the stock spread), around a chosen origin:

    pack = origin + Σ_i x_i · std_i · axis_i          origin = mean or median of the stock

N stock voices span an affine space of N − 1 dimensions, so only N − 1 axes carry variance (53 for
Kokoro's 54 voices; a seed script asked for 256, which silently meant 53 + padding). `k > N − 1` is an
error. The axes are those of the mean-centred stock (true principal axes) whatever the origin. The
median origin is the per-number median projected onto the stock's span (the raw median lies off it,
and then no stock voice would be reachable). The fd-adam seed's "median centroid" start was in fact the
mean: sklearn's PCA re-centres on the data mean, so its x = 0 decoded to the mean voice.
Options: `k` (default N − 1), `center=mean|median`, `units=std|raw` (raw: plain projection lengths,
`scale()` = the stds), `frame` (fit on that one row of every pack — the fd-adam seed used 50 — and
repeat it on all 510 rows; default: fit on whole flattened packs, keeping each voice's row structure).

`mixture` — x = N logits: pack = Σ softmax(x)_i · stock_i, plus (`bias=true`) a 256-d offset added to
every row: x = [logits (N), bias (256)]. x = 0 is the stock mean.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.optimize import nnls

from voicesearch.errors import InputError, UnknownOptions
from voicesearch.space import SearchSpace
from voicesearch.stock import StockVoices
from voicesearch.voice import PACK_ROWS, STYLE_DIM

from .common import column_median, opt_bool, opt_choice, opt_number


def principal_axes(data: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first `keep` principal axes of the rows of `data` (N, F): unit axes (keep, F), stds, variance shares."""
    n = data.shape[0]
    centred = data - data.mean(0)
    # N ≪ F: eigen-decompose the N × N Gram matrix instead of the F × F covariance
    eigval, eigvec = torch.linalg.eigh(centred @ centred.T)
    total = eigval.sum()
    eigval, eigvec = eigval.flip(0)[:keep], eigvec.flip(1)[:, :keep]
    if eigval[-1] <= 1e-9 * eigval[0]:
        raise InputError(f"pca: only {int((eigval > 1e-9 * eigval[0]).sum())} independent directions among the stock voices; use a smaller k")
    axes = (centred.T @ eigvec / eigval.sqrt()).T
    # a fixed sign per axis (largest entry positive): the same stock always gives the same space
    axes = axes * torch.sign(axes.gather(1, axes.abs().argmax(1, keepdim=True)))
    return axes, (eigval / (n - 1)).sqrt(), eigval / total


class _DeviceCache:
    """Keeps copies of a space's tensors on the devices it is used on (to_packs runs on the renderer's)."""

    def __init__(self) -> None:
        self.copies: dict[tuple, torch.Tensor] = {}

    def get(self, name: str, t: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        if t.device == device and t.dtype == dtype:
            return t
        key = (name, str(device), dtype)
        if key not in self.copies:
            self.copies[key] = t.to(device, dtype)
        return self.copies[key]

    def clear(self) -> None:
        self.copies.clear()


class PCASpace(SearchSpace):
    """k principal axes of the stock voices (k ≤ N − 1), in std units around the mean or median voice."""

    def __init__(self, stock: StockVoices, k: Any = None, center: Any = "mean", units: Any = "std",
                 frame: Any = None, **options: Any) -> None:
        if options:
            raise UnknownOptions(f"PCASpace got unknown options: {', '.join(sorted(options))}")
        n = len(stock)
        if n < 2:
            raise InputError("the pca space needs at least 2 stock voices")
        self.center = opt_choice(center, "center", ("mean", "median"))
        self.units = opt_choice(units, "units", ("std", "raw"))
        self.frame = None if frame in (None, "", "none", "all") else opt_number(frame, "frame", int, 0, PACK_ROWS - 1)
        data = stock.packs.reshape(n, -1) if self.frame is None else stock.packs[:, self.frame, :]
        rank = min(n - 1, data.shape[1])
        self.k = rank if k in (None, "", "all") else opt_number(k, "k", int, 1)
        if self.k > rank:
            raise InputError(
                f"pca: k={self.k} but {n} stock voices span only {rank} directions (N − 1); use k ≤ {rank} or add voices")
        axes, std, explained = principal_axes(data.double(), rank)
        self.axes = axes[: self.k].float()  # (k, F) orthonormal rows
        self.std = std[: self.k].float()  # (k,)
        self.explained = explained[: self.k].float()  # share of the stock variance each kept axis carries
        mean = data.double().mean(0)
        if self.center == "median":  # projected onto the stock span (the raw median lies off it: no stock voice reachable)
            mean = mean + ((column_median(data).double() - mean) @ axes.T) @ axes
        self.origin = mean.float()  # (F,)
        self.dim = self.k
        self._cache = _DeviceCache()

    def _unit(self) -> torch.Tensor:
        return self.std if self.units == "std" else torch.ones_like(self.std)

    def to_packs(self, x: torch.Tensor) -> torch.Tensor:
        dev, dt = x.device, x.dtype
        lengths = self._cache.get("unit", self._unit(), dev, dt)
        flat = self._cache.get("origin", self.origin, dev, dt) + (x * lengths) @ self._cache.get("axes", self.axes, dev, dt)
        if self.frame is None:
            return flat.reshape(x.shape[0], PACK_ROWS, STYLE_DIM)
        return flat[:, None, :].expand(x.shape[0], PACK_ROWS, STYLE_DIM).contiguous()

    def from_packs(self, packs: torch.Tensor) -> torch.Tensor:
        dev, dt = packs.device, packs.dtype
        data = packs.reshape(packs.shape[0], -1) if self.frame is None else packs[:, self.frame, :]
        proj = (data - self._cache.get("origin", self.origin, dev, dt)) @ self._cache.get("axes", self.axes, dev, dt).T
        return proj / self._cache.get("unit", self._unit(), dev, dt)

    def scale(self) -> torch.Tensor:
        return torch.ones(self.k) if self.units == "std" else self.std.clone()

    def state_dict(self) -> dict:
        return {"axes": self.axes, "std": self.std, "origin": self.origin, "units": self.units, "frame": self.frame}

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["axes"].shape) != tuple(self.axes.shape) or state.get("frame") != self.frame:
            raise InputError("the checkpoint's pca space has another shape (k, frame or stock set changed); "
                             "resume with the same --space-opt and voices")
        self.axes, self.std, self.origin = state["axes"].clone(), state["std"].clone(), state["origin"].clone()
        self.units = state["units"]
        self._cache.clear()


class MixtureSpace(SearchSpace):
    """Softmax-weighted mixtures of the stock packs (x = N logits), optionally plus a 256-d bias on every row."""

    def __init__(self, stock: StockVoices, bias: Any = False, **options: Any) -> None:
        if options:
            raise UnknownOptions(f"MixtureSpace got unknown options: {', '.join(sorted(options))}")
        self.names = list(stock.names)
        self.packs = stock.packs.float()
        self.n = len(stock)
        self.bias = opt_bool(bias, "bias")
        self.dim = self.n + (STYLE_DIM if self.bias else 0)
        self._bias_scale = stock.packs.mean(dim=1).std(dim=0)
        self._cache = _DeviceCache()
        self._solver: tuple[np.ndarray, np.ndarray, float] | None = None

    def to_packs(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(x[:, : self.n], dim=1)
        packs = torch.einsum("bn,nrc->brc", weights, self._cache.get("packs", self.packs, x.device, x.dtype))
        if self.bias:
            packs = packs + x[:, None, self.n:]
        return packs

    def _flat(self, packs: torch.Tensor) -> torch.Tensor:
        """What the weights must explain: the pack, minus its row mean when a bias absorbs that."""
        packs = packs.double()
        if self.bias:
            packs = packs - packs.mean(dim=1, keepdim=True)
        return packs.reshape(packs.shape[0], -1)

    def _factor(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Cholesky factor of the stock Gram matrix with a stiff Σw = 1 row (cached)."""
        if self._solver is None:
            basis = self._flat(self.packs)
            self._mean = basis.mean(0)
            centred = basis - self._mean  # Σw = 1 lets us centre: better conditioned
            gram = (centred @ centred.T).numpy()
            stiff = float(np.trace(gram)) / self.n * 1e4
            gram = gram + stiff
            chol = np.linalg.cholesky(gram)
            self._solver = (chol, centred.numpy(), stiff)
        return self._solver

    def from_packs(self, packs: torch.Tensor) -> torch.Tensor:
        """Nearest mixture: non-negative least squares on the weights (Σw = 1), logits = log w."""
        chol, centred, stiff = self._factor()
        target = (self._flat(packs.detach().cpu()) - self._mean).numpy()
        rhs = target @ centred.T + stiff  # (B, N): Aᵀb with the Σw = 1 row folded in
        rows = []
        for b in rhs:
            # ‖Lᵀw − L⁻¹b‖² has the same minimiser as wᵀGw − 2bᵀw
            w, _ = nnls(chol.T, np.linalg.solve(chol, b))
            rows.append(w / max(w.sum(), 1e-12))
        weights = torch.from_numpy(np.stack(rows)).clamp_min(1e-6)
        logits = weights.log()
        logits = logits - logits.max(dim=1, keepdim=True).values
        if not self.bias:
            return logits.float().to(packs.device)
        logits = logits.float()
        mixed = torch.einsum("bn,nrc->brc", torch.softmax(logits, 1), self.packs)
        offset = (packs.detach().cpu().float() - mixed).mean(dim=1)
        return torch.cat([logits, offset], dim=1).to(packs.device)

    def scale(self) -> torch.Tensor:
        ones = torch.ones(self.n)
        return torch.cat([ones, self._bias_scale]) if self.bias else ones

    def state_dict(self) -> dict:
        return {"names": list(self.names), "bias": self.bias}

    def load_state_dict(self, state: dict) -> None:
        if list(state["names"]) != self.names or bool(state["bias"]) != self.bias:
            raise InputError("the checkpoint's mixture space used other stock voices or bias setting; "
                             "resume with the same voices and --space-opt")
