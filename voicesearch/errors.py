"""Errors a user can act on.

`InputError` means the user gave us something we cannot use (a missing file, a silent clip, a bad
name). The CLI prints its message as one line and exits with status 2; library code raises it.
`SearchStopped` means a search stopped before its budget for a reason outside the input (out of
memory even one voice at a time, plug-in code calling `sys.exit`); its last checkpoint stays
resumable and the CLI exits with status 3.
"""
from __future__ import annotations


class InputError(ValueError):
    """Bad user input: the message says what is wrong and what to do."""


class UnknownOptions(TypeError):
    """A plug-in was given options it does not take (the base classes raise it for what reaches them)."""


class SearchStopped(RuntimeError):
    """The search stopped early at `step` (the step in progress was dropped); its checkpoint can be resumed."""

    def __init__(self, message: str, step: int = 0):
        super().__init__(message)
        self.step = step


_OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "cufft_internal_error", "cufft_alloc_failed",
                  "cublas_status_alloc_failed", "cudnn_status_alloc_failed")


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA or host memory ran out, including cuFFT plan failures, which under memory pressure say INTERNAL_ERROR."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    return isinstance(error, RuntimeError) and any(s in str(error).lower() for s in _OUT_OF_MEMORY)
