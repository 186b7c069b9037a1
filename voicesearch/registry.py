"""Plug-in registry: strategies, scorers, renderers and spaces found by name.

Built-ins and third-party packages register the same way, through entry points:

    [project.entry-points."voicesearch.scorers"]
    my-scorer = "my_package.scorer:MyScorer"

User code can also register in-process (`@register("strategies", "my-walk")`) or load a file with
`load_plugin("my_strategy.py")`. A name may carry a variant after a colon (`nevergrad:NGOpt`):
the class then receives `variant="NGOpt"`.
"""
from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable

from .errors import InputError

KINDS = ("strategies", "scorers", "renderers", "spaces", "transcribers")
SINGULAR = {"strategies": "strategy", "scorers": "scorer", "renderers": "renderer", "spaces": "space", "transcribers": "transcriber"}
_local: dict[str, dict[str, Any]] = {k: {} for k in KINDS}


def _group(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown plug-in kind {kind!r}; one of {KINDS}")
    return f"voicesearch.{kind}"


def register(kind: str, name: str, replace: bool = False) -> Callable[[Any], Any]:
    """Class decorator: make `cls` available under `name` in this process.

    A name an installed package already provides (a built-in such as `cma-es`, or a third-party entry point) is
    refused unless `replace=True`: a plug-in file must not silently swap out the component a run names.
    """
    _group(kind)
    if not replace and name in _entry_points(kind):
        raise InputError(f"a plug-in registers {SINGULAR[kind]} {name!r}, a name {_entry_points(kind)[name].value} "
                         f"already has; pick another name (or register(..., replace=True) to replace it on purpose)")

    def deco(cls: Any) -> Any:
        _local[kind][name] = cls
        if not getattr(cls, "name", ""):
            try:
                cls.name = name
            except (AttributeError, TypeError):
                pass
        return cls

    return deco


@functools.lru_cache(maxsize=None)
def _entry_points(kind: str) -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=_group(kind))}


def names(kind: str) -> list[str]:
    return sorted(set(_entry_points(kind)) | set(_local[kind]))


def get(kind: str, name: str) -> Any:
    """The class registered as `name` (a `base:variant` name returns it bound to that variant)."""
    if name in _local[kind]:
        return _local[kind][name]
    eps = _entry_points(kind)
    if name in eps:
        try:
            return eps[name].load()
        except Exception as e:  # a broken third-party plug-in must not hide the others
            raise InputError(f"{SINGULAR[kind]} plug-in {name!r} ({eps[name].value}) failed to import: {type(e).__name__}: {e}") from None
    if ":" in name:
        base, variant = name.split(":", 1)
        if base in _local[kind] or base in eps:
            return functools.partial(get(kind, base), variant=variant)
    close = difflib.get_close_matches(name, names(kind), n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(close)}?" if close else f"available: {', '.join(names(kind))}"
    raise InputError(f"unknown {SINGULAR[kind]} {name!r}; {hint} (`voicesearch {kind}` lists them)")


def auto_space(strategy: str, options: dict[str, Any]) -> str:
    """The space a strategy (a registry name, perhaps `base:variant`) asks for when the user leaves it to it."""
    cls = get("strategies", strategy)
    base, bound = getattr(cls, "func", cls), getattr(cls, "keywords", {})  # a variant comes as functools.partial
    space_for = getattr(base, "space_for", None)
    return space_for({**bound, **options}) if space_for else getattr(base, "default_space", "full")


def describe(kind: str) -> list[tuple[str, str, str]]:
    """(name, one-line doc, origin) for every plug-in; a broken one says why instead of its doc."""
    rows = []
    for name in names(kind):
        origin = "local" if name in _local[kind] else _entry_points(kind)[name].value
        try:
            obj = get(kind, name)
            doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
            rows.append((name, doc[0] if doc else "", origin))
        except InputError as e:
            rows.append((name, f"[failed to load] {e}", origin))
    return rows


def load_plugin(spec: str) -> None:
    """Import a module (`pkg.mod`) or a file (`path/to/file.py`) whose decorators register plug-ins."""
    path = Path(spec)
    if spec.endswith(".py"):
        if not path.is_file():
            raise InputError(f"plug-in file {spec} does not exist")
        mod_name = f"voicesearch_plugin_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        what, load = f"plug-in file {spec}", lambda: module_spec.loader.exec_module(module)
    else:
        what, load = f"plug-in module {spec!r}", lambda: importlib.import_module(spec)
    try:
        load()
    except InputError as e:
        raise InputError(f"{what}: {e}") from None
    except SystemExit as e:  # sys.exit in a plug-in must not end the program silently
        raise InputError(f"{what} called sys.exit({e.code!r}) while loading; fix or remove it") from None
    except Exception as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise InputError(f"{what} failed to import: {type(e).__name__}: {first}") from None
