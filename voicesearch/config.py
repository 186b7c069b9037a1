"""RunConfig: the settings of one run, typed and frozen; config.json is its `to_dict()`.

    config = RunConfig.from_dict(make_config(...))      # or read_config(run_dir): the dict config.json holds
    resolved = config.resolve(scorer, renderer)         # `auto` strategy and space made concrete: a new RunConfig
    parts = config.build()                              # renderer, stock, target, Search; parts.config is resolved

Nothing here changes a config in place: `resolve` and `dataclasses.replace` return new objects, `to_dict()` a
fresh dict. Keys this class does not type (`batch_auto`, `score_seconds`, `stock_langs`, `report_live_audio`, ...)
are kept in `extra`, and the key order of the dict a config came from is kept: `from_dict(d).to_dict() == d`, and an
old run directory's config.json is written back byte for byte. Checking the values is `session.validate_config`'s.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

HELD_OUT_TEXT = "The quick brown fox jumps over the lazy dog, and then it takes a long nap in the warm afternoon sun."
AUTO = "auto"

DEFAULTS: dict[str, Any] = {
    "version": 1,
    "target": {"paths": [], "texts": [], "max_seconds": 600.0},
    "strategy": {"name": AUTO, "options": {}},
    "scorer": {"name": "resemblyzer", "options": {}},
    "space": {"name": AUTO, "options": {}},
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


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only view of a private deep copy: the caller's dict and the config share nothing."""
    return MappingProxyType(copy.deepcopy(dict(mapping)))


def _plain(value: Any) -> Any:
    """JSON-shaped copy: read-only mappings back to dicts, tuples back to lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return copy.deepcopy(value)


@dataclass(frozen=True)
class Named:
    """A plug-in by registry name and its options: `{"name": ..., "options": {...}}` in config.json."""

    name: str
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), repr=False)  # other keys, as they came
    keys: tuple[str, ...] = field(default=("name", "options"), compare=False, repr=False)  # the section's key order

    @classmethod
    def from_dict(cls, section: Mapping[str, Any]) -> "Named":
        extra = {k: v for k, v in section.items() if k not in ("name", "options")}
        return cls(section["name"], _frozen(section.get("options") or {}), _frozen(extra), tuple(section))

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, **_plain(self.extra)}
        if self.options or "options" in self.keys:
            out["options"] = _plain(self.options)
        return {k: out[k] for k in dict.fromkeys([*self.keys, *out]) if k in out}


_NAMED = ("strategy", "scorer", "space", "renderer")
_MAPPINGS = ("target", "budget")
_LISTS = ("exclude_voices", "plugins", "sample_texts")


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a run (see `session.DEFAULTS` for the values `make_config` starts from)."""

    target: Mapping[str, Any]  # paths, texts, text_files, max_seconds, or demo: {voices, weights, text}
    strategy: Named = Named(AUTO)
    scorer: Named = Named("resemblyzer")
    space: Named = Named(AUTO)
    renderer: Named = Named("kokoro")
    device: str = "auto"
    voices: str | None = None
    exclude_voices: tuple[str, ...] = ()
    budget: Mapping[str, Any] = field(default_factory=lambda: _frozen(DEFAULTS["budget"]))  # steps, evals, seconds
    batch_size: int | str = 16  # or "auto" until --batch auto has chosen
    seed: int = 0
    speed: float = 1.0
    checkpoint_every: int = 10
    plugins: tuple[str, ...] = ()
    sample_texts: tuple[str, ...] = (HELD_OUT_TEXT,)
    version: int = 1
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # keys not typed here
    keys: tuple[str, ...] = field(default=(), compare=False, repr=False)  # the key order of the dict it came from

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "RunConfig":
        """The config of a dict as config.json holds it (missing keys take the defaults, and stay missing in `to_dict`)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "keys"}
        values: dict[str, Any] = {}
        for key in names & set(config):
            value = config[key]
            if key in _NAMED and isinstance(value, Mapping) and "name" in value:
                value = Named.from_dict(value)
            elif key in _MAPPINGS and isinstance(value, Mapping):
                value = _frozen(value)
            elif key in _LISTS and isinstance(value, list):
                value = tuple(copy.deepcopy(value))
            values[key] = value
        if "target" not in values:
            values["target"] = _frozen({})
        extra = _frozen({k: v for k, v in config.items() if k not in names})
        return cls(**values, extra=extra, keys=tuple(config))

    def to_dict(self) -> dict[str, Any]:
        """A fresh dict, as config.json holds it: the keys of the dict this came from, in its order, then any other
        setting that differs from its default, then the untyped keys."""
        out: dict[str, Any] = {}
        default = RunConfig(target={})
        for f in dataclasses.fields(self):
            if f.name in ("extra", "keys"):
                continue
            value = getattr(self, f.name)
            if f.name in self.keys or not self.keys or value != getattr(default, f.name) or f.name == "target":
                out[f.name] = value.to_dict() if isinstance(value, Named) else _plain(value)
        out.update(_plain(self.extra))
        order = [k for k in self.keys if k in out] + [k for k in out if k not in self.keys]
        return {k: out[k] for k in order}

    def resolve(self, scorer: Any, renderer: Any) -> "RunConfig":
        """`auto` strategy and space made concrete (a new RunConfig): config.json then names what ran.

        The choice follows the recovery benchmark (docs/strategies.md): true gradients when the renderer runs on a
        GPU and the scorer is differentiable, else CMA-ES; the space is the one the strategy asks for.
        """
        import torch

        from . import registry

        strategy, space = self.strategy, self.space
        if strategy.name == AUTO:
            on_gpu = torch.device(getattr(renderer, "device", "cpu")).type == "cuda"
            gradients = on_gpu and getattr(scorer, "differentiable", False)
            strategy = dataclasses.replace(strategy, name="gradient" if gradients else "cma-es")
        if space.name == AUTO:
            space = dataclasses.replace(space, name=registry.auto_space(strategy.name, dict(strategy.options)))
        return dataclasses.replace(self, strategy=strategy, space=space)

    def build(self, renderer: Any = None, target: Any = None) -> Any:
        """Every part a search needs (`session.Parts`), validated, before anything is written to disk."""
        from .session import build

        return build(self, renderer=renderer, target=target)
