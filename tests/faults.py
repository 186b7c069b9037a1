"""Fault injection for the run-directory tests (a plug-in file: load it after tests/fakes.py).

`faulty-fake` is the fake sine renderer (tests/fakes.py) with, from environment variables of the process:
  FAULT_RENDER_DELAY=s      sleep s seconds in every render (so a signal lands in the middle of a step)
  FAULT_FAIL_FROM_CALL=n    from its n-th render on, fail as a GPU under memory pressure does:
  FAULT_FAIL_KIND=oom|cufft torch.OutOfMemoryError, or RuntimeError('cuFFT error: CUFFT_INTERNAL_ERROR')
  FAULT_FAIL_CALLS=k        ... for k calls only (default: every call from n on)
  FAULT_EXIT_AT_CALL=n      call sys.exit(0) in the n-th render (a plug-in ending the program)
The loop's wait between out-of-memory retries is shortened to keep tests fast.
"""
from __future__ import annotations

import os
import sys
import time

import torch

from voicesearch import registry
from voicesearch.loop import Search

Search.oom_wait = 0.01
FakeRenderer = registry.get("renderers", "fake")


@registry.register("renderers", "faulty-fake")
class FaultyRenderer(FakeRenderer):
    """The fake renderer with injected delays and failures (tests only)."""

    def render(self, packs, text, *, speed=1.0, differentiable=False):
        call = self.calls + 1
        delay = float(os.environ.get("FAULT_RENDER_DELAY", 0))
        if delay:
            time.sleep(delay)
        if int(os.environ.get("FAULT_EXIT_AT_CALL", 0)) == call:
            sys.exit(0)
        start = int(os.environ.get("FAULT_FAIL_FROM_CALL", 0))
        count = int(os.environ.get("FAULT_FAIL_CALLS", 10**9))
        if start and start <= call < start + count:
            self.calls += 1
            if os.environ.get("FAULT_FAIL_KIND", "oom") == "cufft":
                raise RuntimeError("cuFFT error: CUFFT_INTERNAL_ERROR")
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return super().render(packs, text, speed=speed, differentiable=differentiable)
