"""Errors a user can act on.

`InputError` means the user gave us something we cannot use (a missing file, a silent clip, a bad
name). The CLI prints its message as one line and exits with status 2; library code raises it.
"""


class InputError(ValueError):
    """Bad user input: the message says what is wrong and what to do."""
