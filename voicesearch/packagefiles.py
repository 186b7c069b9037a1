"""Data files shipped inside installed packages (model weights in a wheel), found without importing them.

Some wheels carry weights next to code a plug-in must not import (it pulls in heavy dependencies or
downloads at import time). `importlib.util.find_spec` locates the package folder without running it:

    path = package_file("resemblyzer", "pretrained.pt", "pip install resemblyzer (it ships the weights)")
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import InputError

__all__ = ["package_file"]


def package_file(package: str, relpath: str, install_hint: str) -> Path:
    """The file `relpath` inside the installed `package` (a top-level package name), never importing it.

    A missing package or file raises `InputError` with one line ending in `install_hint` (e.g. "pip install x").
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"{relpath} comes with the {package} package, which is not installed: {install_hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / relpath
    if not path.is_file():
        raise InputError(f"{path} is missing from the installed {package} package: reinstall it ({install_hint})")
    return path
