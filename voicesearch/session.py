"""Build a search from a config dict (what `clone` writes to config.json and `resume` reads back)."""
from __future__ import annotations

import copy
import inspect
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import registry
from .audio import load_target
from .errors import InputError, UnknownOptions
from .loop import Budget, Search
from .renderer import Renderer
from .stock import StockVoices, voices_folder_from_env
from .types import TargetSpeech

from .config import AUTO, DEFAULTS, HELD_OUT_TEXT, RunConfig  # noqa: F401 - DEFAULTS, HELD_OUT_TEXT: this module's API too


def make_config(**overrides: Any) -> dict[str, Any]:
    config = copy.deepcopy(DEFAULTS)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    return config


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for but CUDA is not available here; use --device cpu")
    if device != "cpu" and not device.startswith(("cuda", "mps")):
        raise InputError(f"unknown device {device!r}; use auto, cpu or cuda[:N]")
    return device


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """`["k=v", ...]` from the CLI into a dict, with numbers and booleans typed."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise InputError(f"option {pair!r} is not key=value")
        key, value = pair.split("=", 1)
        out[key.strip().replace("-", "_")] = _typed(value.strip())
    return out


def _typed(value: str) -> Any:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


@dataclass
class Parts:
    renderer: Renderer
    stock: StockVoices
    target: TargetSpeech
    search: Search
    config: dict[str, Any] = field(default_factory=dict)  # the config built, `auto` choices made concrete


def build_renderer(config: dict[str, Any]) -> Renderer:
    cls = registry.get("renderers", config["renderer"]["name"])
    return cls(device=resolve_device(config["device"]), **config["renderer"]["options"])


def load_stock(config: dict[str, Any], renderer: Renderer) -> StockVoices:
    folder = config.get("voices") or voices_folder_from_env()
    stock = StockVoices.from_folder(folder) if folder else renderer.stock_voices()
    if config.get("exclude_voices"):
        stock = stock.without(*config["exclude_voices"])
    from .cpu import filter_stock

    return filter_stock(stock, config)  # `stock_langs` (the CPU default): the text's language only


def build_target(config: dict[str, Any], renderer: Renderer, stock_all: StockVoices | None = None) -> TargetSpeech:
    t = config["target"]
    if t.get("demo"):
        from .demo import demo_target

        return demo_target(renderer, stock_all, t["demo"])
    texts = t.get("texts") or []
    return load_target(t["paths"], texts=texts, text_files=t.get("text_files"), sample_rate=renderer.sample_rate,
                       max_seconds=float(t.get("max_seconds", 600.0)))


def check_names(config: dict[str, Any]) -> None:
    """Load plug-in files and resolve every name: fails fast, before any model loads or file is written."""
    for plugin in config.get("plugins", []):
        registry.load_plugin(plugin)
    for kind, key in (("strategies", "strategy"), ("scorers", "scorer"), ("spaces", "space"), ("renderers", "renderer")):
        if not (key in ("strategy", "space") and config[key]["name"] == AUTO):
            registry.get(kind, config[key]["name"])


def resolve_auto(config: dict[str, Any], scorer: Any, renderer: Renderer) -> dict[str, Any]:
    """A copy of `config` with an `auto` strategy and space made concrete (`RunConfig.resolve`): config.json then
    names what ran. `config` itself is not changed."""
    return RunConfig.from_dict(config).resolve(scorer, renderer).to_dict()


def build(config: dict[str, Any] | RunConfig, renderer: Renderer | None = None, target: TargetSpeech | None = None) -> Parts:
    """Everything a search needs, validated, before anything is written to disk. `config` is not changed:
    `Parts.config` is the config built, its `auto` choices made concrete (what config.json is to say)."""
    config = config.to_dict() if isinstance(config, RunConfig) else copy.deepcopy(config)
    check_names(config)
    scorer_cls = registry.get("scorers", config["scorer"]["name"])
    device = resolve_device(config["device"])
    seed = int(config["seed"])
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    if target is None and not config["target"].get("demo"):  # check the audio before loading any model
        rate = getattr(renderer or registry.get("renderers", config["renderer"]["name"]), "sample_rate", 24000)
        target = load_target(config["target"]["paths"], texts=config["target"].get("texts") or [],
                             text_files=config["target"].get("text_files"), sample_rate=rate,
                             max_seconds=float(config["target"].get("max_seconds", 600.0)))
    renderer = renderer or build_renderer(config)
    stock_all = None
    if config["target"].get("demo"):
        exclude, config = config.get("exclude_voices", []), dict(config, exclude_voices=[])
        stock_all = load_stock(config, renderer)
        config["exclude_voices"] = exclude
    target = target or build_target(config, renderer, stock_all)
    stock = load_stock(config, renderer)
    scorer = _construct(scorer_cls, "scorer", config["scorer"], device=device)
    config = resolve_auto(config, scorer, renderer)
    space = _construct(registry.get("spaces", config["space"]["name"]), "space", config["space"], stock)
    strategy = _construct(registry.get("strategies", config["strategy"]["name"]), "strategy", config["strategy"],
                          space=space, stock=stock, rng=torch.Generator().manual_seed(seed),
                          batch_size=int(config["batch_size"]))
    budget = Budget(**config["budget"])
    if budget.steps is None and budget.evals is None and budget.seconds is None:
        raise InputError("no budget: give --steps, --evals or --seconds")
    search = Search(strategy, scorer, renderer, target, budget, speed=float(config.get("speed", 1.0)))
    from .cpu import score_texts

    search.texts = score_texts(search.texts, scorer, config.get("score_seconds"))  # the CPU default cuts them short
    return Parts(renderer, stock, target, search, config)


def unknown_options(cls: Any, options: dict[str, Any]) -> list[str]:
    """The options a plug-in's constructor has no parameter for; none when it takes `**options` (the Strategy,
    Scorer and space base classes then refuse what is left with `UnknownOptions`)."""
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): the constructor decides
        return []
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return []
    return sorted(set(options) - {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)})


def _construct(cls: Any, kind: str, section: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
    options = section.get("options", {})
    unknown = unknown_options(cls, options)
    if unknown:
        raise InputError(f"{kind} {section['name']!r}: unknown option{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(unknown)}; check --{kind}-opt")
    try:
        return cls(*args, **kwargs, **options)
    except UnknownOptions as e:
        raise InputError(f"{kind} {section['name']!r}: {e}; check --{kind}-opt") from None
    except SystemExit as e:  # plug-in code must not end the program silently
        raise InputError(f"{kind} {section['name']!r} called sys.exit({e.code!r}) while starting") from None


def config_path_fields(config: dict[str, Any]) -> dict[str, Any]:
    """Make file paths absolute so a config reruns from any working directory."""
    config = copy.deepcopy(config)
    config["target"]["paths"] = [str(Path(p).resolve()) for p in config["target"].get("paths", [])]
    if config["target"].get("text_files"):
        config["target"]["text_files"] = [str(Path(p).resolve()) if p else None for p in config["target"]["text_files"]]
    if config.get("voices"):
        config["voices"] = str(Path(config["voices"]).resolve())
    config["plugins"] = [str(Path(p).resolve()) if str(p).endswith(".py") else p for p in config.get("plugins", [])]
    return config


# ------------------------------------------------------------------ validating a config (config.json is user input)

from .autobatch import MAX_BATCH  # noqa: E402 - candidates per step; past this one population alone takes gigabytes
MAX_SEED = 2**63 - 1


def _fail(where: str, key: str, want: str, value: Any) -> None:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    raise InputError(f"{where}: {key} must be {want} (got {shown})")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and v == v and abs(v) != float("inf")


def _str_list(v: Any, allow_none: bool = False) -> bool:
    return isinstance(v, list) and all(isinstance(i, str) or (allow_none and i is None) for i in v)


def validate_config(config: Any, where: str = "config") -> dict[str, Any]:
    """Check every field's type and range (a config.json may have been edited, damaged or crafted): InputError
    naming the field, or the config unchanged. Fields may be absent where `build` has a default."""
    if not isinstance(config, dict):
        raise InputError(f"{where} must hold a JSON object (got {type(config).__name__}); the run directory is damaged")
    for key in ("target", "strategy", "scorer", "space", "renderer", "budget", "batch_size"):
        if key not in config:
            raise InputError(f"{where}: {key!r} is missing; the run directory is damaged")
    target = config["target"]
    if not isinstance(target, dict):
        _fail(where, "target", "an object", target)
    if not target.get("demo"):
        if not _str_list(target.get("paths")) or not target["paths"]:
            _fail(where, "target.paths", "a non-empty list of file names", target.get("paths"))
    elif not isinstance(target["demo"], (dict, bool)):
        _fail(where, "target.demo", "an object", target["demo"])
    if "texts" in target and not _str_list(target["texts"], allow_none=True):
        _fail(where, "target.texts", "a list of strings", target["texts"])
    if target.get("text_files") is not None and not _str_list(target["text_files"], allow_none=True):
        _fail(where, "target.text_files", "a list of file names", target["text_files"])
    if "max_seconds" in target and not (_is_number(target["max_seconds"]) and target["max_seconds"] > 0):
        _fail(where, "target.max_seconds", "a positive number", target["max_seconds"])
    for key in ("strategy", "scorer", "space", "renderer"):
        part = config[key]
        if not isinstance(part, dict) or not isinstance(part.get("name"), str) or not part["name"].strip():
            _fail(where, key, 'an object {"name": ..., "options": {...}}', part)
        if not isinstance(part.get("options", {}), dict):
            _fail(where, f"{key}.options", "an object", part["options"])
    budget = config["budget"]
    if not isinstance(budget, dict) or set(budget) - {"steps", "evals", "seconds"}:
        _fail(where, "budget", "an object with steps, evals, seconds", budget)
    for key in ("steps", "evals"):
        if budget.get(key) is not None and not (_is_int(budget[key]) and budget[key] >= 1):
            _fail(where, f"budget.{key}", "a positive integer or null", budget[key])
    if budget.get("seconds") is not None and not (_is_number(budget["seconds"]) and budget["seconds"] > 0):
        _fail(where, "budget.seconds", "a positive number or null", budget["seconds"])
    if all(budget.get(k) is None for k in ("steps", "evals", "seconds")):
        raise InputError(f"{where}: the budget is empty; give steps, evals or seconds")
    batch = config["batch_size"]
    if batch != "auto" and not (_is_int(batch) and 1 <= batch <= MAX_BATCH):
        _fail(where, "batch_size", f"an integer from 1 to {MAX_BATCH}", batch)
    checks = {"device": (lambda v: isinstance(v, str), "a string"),
              "voices": (lambda v: v is None or isinstance(v, str), "a folder name or null"),
              "exclude_voices": (_str_list, "a list of voice names"),
              "seed": (lambda v: _is_int(v) and 0 <= v <= MAX_SEED, "a non-negative integer"),
              "speed": (lambda v: _is_number(v) and 0.25 <= v <= 4, "a number from 0.25 to 4"),
              "checkpoint_every": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
              "plugins": (_str_list, "a list of plug-in files or modules"),
              "sample_texts": (_str_list, "a list of strings")}
    for key, (ok, want) in checks.items():
        if key in config and not ok(config[key]):
            _fail(where, key, want, config[key])
    return config
