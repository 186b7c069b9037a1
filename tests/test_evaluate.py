"""`evaluate`: judges on held-out text for a voice and the best stock voice, with a cheap fake renderer."""
from __future__ import annotations

import json

import pytest
import torch

from voicesearch import registry
from voicesearch.errors import InputError
from voicesearch.evaluate import evaluate, format_table, load_candidate, optimized_scorers
from voicesearch.scorer import Scorer
from voicesearch.stock import StockVoices
from voicesearch.types import AudioBatch, ScoreResult, TargetSpeech
from voicesearch.voice import save_voice

RATE = 16000


class ToneRenderer:
    """A pack's mean style sets three partials; the text sets the duration (cheap stand-in for Kokoro)."""

    sample_rate, device = RATE, torch.device("cpu")

    def __init__(self):
        self.rendered: list[tuple[int, str]] = []

    def render(self, packs, text, *, speed=1.0, differentiable=False):
        self.rendered.append((packs.shape[0], text))
        style = packs.mean(1)[:, :3]
        n = int(RATE * 0.05 * len(text.split()))
        t = torch.arange(n) / RATE
        freqs = torch.tensor([150.0, 400.0, 900.0]) * (1 + 0.3 * torch.tanh(style))
        wave = 0.2 * torch.sin(2 * torch.pi * freqs[..., None] * t).sum(1)
        return AudioBatch(wave, torch.full((packs.shape[0],), n), RATE)


def spectrum(wave: torch.Tensor) -> torch.Tensor:
    spec = torch.fft.rfft(wave[..., :RATE], n=RATE).abs()
    return spec / spec.norm(dim=-1, keepdim=True)


class SpectrumEmbedder:
    """A speaker embedder's `embed_clips` for the stand-in judge: one normalized spectrum per clip."""

    def embed_clips(self, clips, sample_rate):
        return torch.cat([spectrum(c.reshape(1, -1)) for c in clips])


@registry.register("scorers", "test-spectrum")
class SpectrumJudge(Scorer):
    """Cosine between magnitude spectra (a speaker-judge stand-in)."""

    embedder = SpectrumEmbedder()

    def prepare(self, target):
        return spectrum(target.clips[0][None])

    def score(self, renders, state):
        sim = (spectrum(renders.audio(0).wave) * state).sum(-1)
        return ScoreResult(total=sim, parts={"similarity": sim})


@pytest.fixture(scope="module")
def tones() -> StockVoices:
    g = torch.Generator().manual_seed(3)
    return StockVoices([f"v{i}" for i in range(6)], torch.randn(6, 510, 256, generator=g))


@pytest.fixture(scope="module")
def target(tones) -> TargetSpeech:
    audio = ToneRenderer().render(tones.packs[4:5], "the target speaker says a sentence of words here")
    return TargetSpeech([audio.item(0)], ["the target speaker says a sentence of words here"], RATE)


def test_voice_against_best_stock(tones, target):
    renderer = ToneRenderer()
    voice = tones.packs[4] + 0.3 * torch.randn(510, 256, generator=torch.Generator().manual_seed(5))
    texts = ["a held out sentence with nine words in it"]
    result = evaluate(voice[:, None, :], target, texts, ["test-spectrum", "dnsmos"], renderer, tones, batch_size=4)
    json.dumps(result)  # JSON-ready
    assert result["judges"] == ["test-spectrum", "dnsmos"] and result["texts"] == texts
    assert result["best_stock"]["name"] == "v4"  # the target's own voice wins the first judge
    assert result["stock_ranking"][0]["name"] == "v4" and len(result["stock_ranking"]) == 5
    cand, best = result["candidate"], result["best_stock"]
    assert 0 < cand["scores"]["test-spectrum"] < best["scores"]["test-spectrum"] <= 1.0 + 1e-6
    assert set(cand["parts"]["dnsmos"]) == {"sig", "bak", "ovrl"} and 1 <= cand["scores"]["dnsmos"] <= 5
    assert result["delta"]["dnsmos"] == pytest.approx(cand["scores"]["dnsmos"] - best["scores"]["dnsmos"])
    # The voice, then the stock in batches of 4: one render per batch and text, shared by every judge.
    assert sorted(b for b, _ in renderer.rendered) == sorted([1, 4, 2])
    # Closure for the speaker judge (dnsmos has no embedder): floor = best stock under it, ceiling = half vs half.
    spec = result["closure"]["test-spectrum"]
    assert set(result["closure"]) == {"test-spectrum"} and spec["floor_voice"] == "v4" and spec["held_out"] is None
    clip = target.clips[0].reshape(-1)
    half = clip.shape[-1] // 2
    assert spec["ceiling"] == pytest.approx(float((spectrum(clip[None, :half]) * spectrum(clip[None, half:])).sum()), abs=1e-5)
    if spec["ceiling"] > spec["floor"]:
        assert spec["closure"] == pytest.approx((spec["voice"] - spec["floor"]) / (spec["ceiling"] - spec["floor"]))
    else:  # the target's own stock voice is at or past the clip's half-vs-half similarity: no gap to close
        assert spec["closure"] is None

    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(format_table(result))
    text = console.export_text()
    assert "test-spectrum" in text and "dnsmos" in text and "best stock (v4)" in text and "closure" in text


def test_optimized_scorers_come_from_the_run_config(tmp_path):
    assert optimized_scorers(tmp_path) is None  # a loose voice file: unknown
    (tmp_path / "config.json").write_text(json.dumps({"scorer": {"name": "compose:0.7*resemblyzer+0.3*ecapa"}}))
    assert {"resemblyzer", "ecapa"} <= optimized_scorers(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"scorer": {"name": "ecapa", "options": {}}}))
    assert "ecapa" in optimized_scorers(tmp_path) and "resemblyzer" not in optimized_scorers(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    assert optimized_scorers(tmp_path) is None


def test_run_directory_and_bad_inputs(tones, target, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(InputError, match="no voice_final.pt"):
        load_candidate(run)
    save_voice(tones.packs[2][:, None, :], run / "voice_best.pt")
    name, pack = load_candidate(run)
    assert name.endswith("voice_best.pt") and torch.equal(pack, tones.packs[2])
    result = evaluate(run, target, ["some words", "and other words"], ["test-spectrum"], ToneRenderer(), None)
    assert result["best_stock"] is None and result["candidate"]["scores"]["test-spectrum"] > 0
    per_text = result["candidate"]["per_text"]["test-spectrum"]
    assert len(per_text) == 2 and result["candidate"]["scores"]["test-spectrum"] == pytest.approx(sum(per_text) / 2)
    with pytest.raises(InputError, match="held-out text"):
        evaluate(run, target, ["  "], ["test-spectrum"], ToneRenderer(), tones)
    with pytest.raises(InputError, match="unknown scorer"):
        evaluate(run, target, ["words"], ["no-such-judge"], ToneRenderer(), tones)


@pytest.mark.slow
def test_real_kokoro_renderer(stock, targets_dir):
    """The real pipeline: Kokoro speaks held-out text; Resemblyzer judges it against the example target."""
    from voicesearch.audio import load_target
    from voicesearch.kokoro.renderer import KokoroRenderer

    renderer = KokoroRenderer(device="cpu")
    target = load_target([targets_dir / "kvoicewalk_example_target.wav"], sample_rate=renderer.sample_rate)
    small = stock.subset(lambda n: n in ("af_bella", "am_adam", "bf_emma"))
    result = evaluate(small.packs[0][:, None, :], target, ["Hello there, this is a short test."], ["resemblyzer"],
                      renderer, small, batch_size=3)
    assert result["best_stock"]["name"] in small.names
    assert result["candidate"]["scores"]["resemblyzer"] <= result["best_stock"]["scores"]["resemblyzer"] + 1e-4


def test_closure_against_the_best_other_stock_voice(tones, target):
    """The target's own voice, judged against the other stock voices: most of the floor-to-ceiling gap is closed;
    a stranger's voice closes none of it."""
    others = tones.without("v4")
    texts = ["a held out sentence with nine words in it"]
    own = evaluate(tones.packs[4][:, None, :], target, texts, ["test-spectrum"], ToneRenderer(), others,
                   optimized={"test-spectrum"})["closure"]["test-spectrum"]
    assert own["floor_voice"] != "v4" and own["floor"] < own["ceiling"] and own["held_out"] is False
    assert own["closure"] == pytest.approx((own["voice"] - own["floor"]) / (own["ceiling"] - own["floor"]))
    assert own["closure"] > 0.5
    stranger = evaluate(others.packs[0][:, None, :], target, texts, ["test-spectrum"], ToneRenderer(), others,
                        optimized={"resemblyzer"})["closure"]["test-spectrum"]
    assert stranger["closure"] <= 0 and stranger["held_out"] is True
