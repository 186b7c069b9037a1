"""Random streams for plug-ins that wrap a numpy-based optimizer (pycma, Nevergrad, ...).

A strategy draws from its own `torch.Generator` (`self.rng`), which the loop saves and restores. Libraries
that draw from numpy's global stream need a private one instead, kept as plain data in the strategy's state
so that checkpoints never hold a pickle and a resume continues the same stream:

    self.np_rng = np_state_to_plain(numpy_state_from(self.rng))  # in __init__: plain data, saved with the state
    stream = {"np": np_state_from_plain(self.np_rng)}            # around every call into the library
    with numpy_global_rng(stream):
        points = self.es.ask()
    self.np_rng = np_state_to_plain(stream["np"])
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import torch

__all__ = ["np_state_from_plain", "np_state_to_plain", "numpy_global_rng", "numpy_state_from"]


@contextlib.contextmanager
def numpy_global_rng(state: dict[str, Any]) -> Iterator[None]:
    """Run code that draws from `np.random` (pycma does) on a private stream kept in `state["np"]`.

    Other components of the loop may draw from the global numpy stream between asks; a private stream
    makes the strategy's draws depend on its own history only, which exact resume needs.
    """
    outside = np.random.get_state()
    np.random.set_state(state["np"])
    try:
        yield
    finally:
        state["np"] = np.random.get_state()
        np.random.set_state(outside)


def numpy_state_from(rng: torch.Generator) -> tuple:
    """A fresh numpy stream state (`np.random.get_state()` form) seeded from one draw of `rng`."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=rng))
    return np.random.RandomState(seed).get_state()


def np_state_to_plain(state: tuple) -> dict[str, Any]:
    """A numpy stream state as plain data (a tensor and numbers) that a checkpoint may hold."""
    kind, keys, pos, has_gauss, cached = state
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def np_state_from_plain(state: dict[str, Any]) -> tuple:
    """The inverse of `np_state_to_plain`."""
    return (state["kind"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["cached"])
