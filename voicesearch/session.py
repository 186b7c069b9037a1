"""Build a search from a config dict (what `clone` writes to config.json and `resume` reads back)."""
from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import registry
from .audio import load_target
from .errors import InputError
from .loop import Budget, Search
from .renderer import Renderer
from .stock import StockVoices, voices_folder_from_env
from .types import TargetSpeech

HELD_OUT_TEXT = "The quick brown fox jumps over the lazy dog, and then it takes a long nap in the warm afternoon sun."

DEFAULTS: dict[str, Any] = {
    "version": 1,
    "target": {"paths": [], "texts": [], "max_seconds": 600.0},
    "strategy": {"name": "auto", "options": {}},
    "scorer": {"name": "resemblyzer", "options": {}},
    "space": {"name": "auto", "options": {}},
    "renderer": {"name": "kokoro", "options": {}},
    "device": "auto",
    "voices": None,
    "exclude_voices": [],
    "budget": {"steps": None, "evals": 2000, "seconds": None},
    "batch_size": 16,
    "seed": 0,
    "speed": 1.0,
    "checkpoint_every": 10,
    "plugins": [],
    "sample_texts": [HELD_OUT_TEXT],
}


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


def build_renderer(config: dict[str, Any]) -> Renderer:
    cls = registry.get("renderers", config["renderer"]["name"])
    return cls(device=resolve_device(config["device"]), **config["renderer"]["options"])


def load_stock(config: dict[str, Any], renderer: Renderer) -> StockVoices:
    folder = config.get("voices") or voices_folder_from_env()
    stock = StockVoices.from_folder(folder) if folder else renderer.stock_voices()
    if config.get("exclude_voices"):
        stock = stock.without(*config["exclude_voices"])
    return stock


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


AUTO = "auto"


def resolve_auto(config: dict[str, Any], scorer: Any, renderer: Renderer) -> None:
    """Make an `auto` strategy and space concrete, in `config` itself: config.json then names what ran.

    The choice follows the recovery benchmark (docs/strategies.md): true gradients when the renderer runs on
    a GPU and the scorer is differentiable, else CMA-ES; the space is the one the strategy asks for.
    """
    if config["strategy"]["name"] == AUTO:
        on_gpu = torch.device(getattr(renderer, "device", "cpu")).type == "cuda"
        gradients = on_gpu and getattr(scorer, "differentiable", False)
        config["strategy"]["name"] = "gradient" if gradients else "cma-es"
    if config["space"]["name"] == AUTO:
        config["space"]["name"] = auto_space(config["strategy"]["name"], config["strategy"].get("options", {}))


def auto_space(strategy: str, options: dict[str, Any]) -> str:
    """The space a strategy (a registry name, perhaps `base:variant`) asks for when the user leaves it to it."""
    cls = registry.get("strategies", strategy)
    base, bound = getattr(cls, "func", cls), getattr(cls, "keywords", {})  # a variant comes as functools.partial
    space_for = getattr(base, "space_for", None)
    return space_for({**bound, **options}) if space_for else getattr(base, "default_space", "full")


def build(config: dict[str, Any], renderer: Renderer | None = None, target: TargetSpeech | None = None) -> Parts:
    """Everything a search needs, validated, before anything is written to disk."""
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
    resolve_auto(config, scorer, renderer)
    space = _construct(registry.get("spaces", config["space"]["name"]), "space", config["space"], stock)
    strategy = _construct(registry.get("strategies", config["strategy"]["name"]), "strategy", config["strategy"],
                          space=space, stock=stock, rng=torch.Generator().manual_seed(seed),
                          batch_size=int(config["batch_size"]))
    budget = Budget(**config["budget"])
    if budget.steps is None and budget.evals is None and budget.seconds is None:
        raise InputError("no budget: give --steps, --evals or --seconds")
    search = Search(strategy, scorer, renderer, target, budget, speed=float(config.get("speed", 1.0)))
    return Parts(renderer, stock, target, search)


def _construct(cls: Any, kind: str, section: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return cls(*args, **kwargs, **section.get("options", {}))
    except TypeError as e:
        if "unexpected keyword" in str(e) or "unknown option" in str(e):
            raise InputError(f"{kind} {section['name']!r}: {e}; check --{kind}-opt") from None
        raise


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
