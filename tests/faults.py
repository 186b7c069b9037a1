"""Fault injection for the run-directory tests (a plug-in file: load it after tests/fakes.py).

`faulty-fake` is the fake sine renderer (tests/fakes.py) with, from environment variables of the process:
  FAULT_RENDER_DELAY=s      sleep s seconds in every population render (so a signal lands inside a step)
  FAULT_MARK=prefix         create the file PREFIXn as population render n starts (a test then knows where it is)
  FAULT_FAIL_FROM_CALL=n    from its n-th population render (more than one voice) on, fail as a GPU under
                            memory pressure does:
  FAULT_FAIL_KIND=oom|cufft torch.OutOfMemoryError, or RuntimeError('cuFFT error: CUFFT_INTERNAL_ERROR')
  FAULT_FAIL_CALLS=k        ... for k calls only (default: every call from n on)
  FAULT_EXIT_AT_CALL=n      call sys.exit(0) in the n-th population render (a plug-in ending the program)
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

    population_calls = 0

    def render(self, packs, text, *, speed=1.0, differentiable=False):
        if packs.shape[0] == 1:  # the report and the samples render one voice: faults hit populations only
            return super().render(packs, text, speed=speed, differentiable=differentiable)
        self.population_calls += 1
        call = self.population_calls
        if os.environ.get("FAULT_MARK"):
            open(f"{os.environ['FAULT_MARK']}{call}", "w").close()
        delay = float(os.environ.get("FAULT_RENDER_DELAY", 0))
        if delay:
            time.sleep(delay)
        if int(os.environ.get("FAULT_EXIT_AT_CALL", 0)) == call:
            sys.exit(0)
        start = int(os.environ.get("FAULT_FAIL_FROM_CALL", 0))
        count = int(os.environ.get("FAULT_FAIL_CALLS", 10**9))
        if start and start <= call < start + count:
            if os.environ.get("FAULT_FAIL_KIND", "oom") == "cufft":
                raise RuntimeError("cuFFT error: CUFFT_INTERNAL_ERROR")
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return super().render(packs, text, speed=speed, differentiable=differentiable)
