"""Kokoro's forward pass for a batch of styles speaking one token sequence.

`kokoro.KModel.forward_with_tokens` handles one utterance, under `no_grad`. Here B styles share one text, so the
style-free parts (ALBERT, `bert_encoder`, `text_encoder`) run once and broadcast; the prosody predictor runs per
item; each item gets its own durations and alignment, and the decoder and generator run over the batch padded to
the longest item. Every instance norm, LSTM, convolution and STFT sees only its item's own frames (masked
statistics, packed sequences, zeroed padding, per-item reflect padding and window envelope), so item b of a batch
matches a render of b alone up to float rounding. The modules and their weights are Kokoro's; only the
orchestration is re-written.
"""
from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import SAMPLES_PER_FRAME

@dataclass
class TextFeatures:
    """The style-free half of one token sequence: (1, 512, T) from ALBERT and from the text encoder."""

    d_en: torch.Tensor
    t_en: torch.Tensor
    n_tokens: int


@dataclass
class Held:
    """Per-item quantities that get no gradient in Kokoro: integer durations (B, T) and the harmonic source
    spectrum (B, 22, K). Passing them back into `synthesize` holds them fixed (finite-difference checks)."""

    durations: torch.Tensor
    source: torch.Tensor
    f0: torch.Tensor | None = None  # (B, 2·frames) predicted F0 in Hz: not held, reported (with gradients)


class NoiseBank:
    """The sine source's random phase and additive noise, as a fixed function of (seed, sample index).

    Every item of every batch gets the same noise, so an item's audio does not depend on its batch position or
    batch size, and candidates are compared under common random numbers. Blocks are generated on the CPU from
    their own seed, so a longer request extends the table without changing its prefix.
    """

    BLOCK = 1 << 15

    def __init__(self, seed: int, harmonics: int):
        self.seed = seed
        self.harmonics = harmonics
        self._cpu: list[torch.Tensor] = []
        self._device: dict[tuple, torch.Tensor] = {}
        g = torch.Generator().manual_seed(seed)
        self.initial_phase = torch.rand(harmonics, generator=g)
        self.initial_phase[0] = 0  # Kokoro gives the fundamental no random phase

    def noise(self, length: int, device: torch.device) -> torch.Tensor:
        while len(self._cpu) * self.BLOCK < length:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + len(self._cpu) + 1)
            self._cpu.append(torch.randn(self.BLOCK, self.harmonics, generator=g))
        key = (str(device), len(self._cpu))
        if key not in self._device:
            self._device = {key: torch.cat(self._cpu).to(device)}
        return self._device[key][:length]


# ----------------------------------------------------------------------------------------------- masked building blocks

def lengths_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 1, size) bool: True on each item's own positions."""
    return (torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]).unsqueeze(1)


def keep(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """x with zeros where the mask `m` is False: one kernel each way (masked_fill(~m, 0) takes three forward)."""
    return torch.where(m, x, 0)


class Span(NamedTuple):
    """Each item's own positions of a padded batch: mask (B, 1, L) and their count (B, 1, 1) as float, made once
    per length and shared by every masked norm at that length."""

    m: torch.Tensor
    n: torch.Tensor

    @classmethod
    def of(cls, lengths: torch.Tensor, size: int) -> "Span":
        m = lengths_mask(lengths, size)
        return cls(m, m.sum(-1, keepdim=True).clamp(min=1).float())


def adain(mod, x: torch.Tensor, s: torch.Tensor, span: Span) -> torch.Tensor:
    """kokoro.istftnet.AdaIN1d over each item's own positions: instance-norm statistics from the unmasked part only.

    Inputs are zero past each item's end (every function here keeps that so), so plain sums give the masked sums.
    The norm's affine and AdaIN's (1 + gamma, beta) fold into one per-channel scale and shift.
    """
    norm = mod.norm
    xf = x.float()
    centred = keep(xf - xf.sum(-1, keepdim=True) / span.n, span.m)
    var = centred.square().sum(-1, keepdim=True) / span.n
    gamma, beta = mod.fc(s).float()[:, :, None].chunk(2, dim=1)
    gain = 1 + gamma
    scale = gain * torch.rsqrt(var + norm.eps)
    shift = beta
    if norm.affine:
        shift = torch.addcmul(beta, gain, norm.bias.float()[:, None])
        scale = scale * norm.weight.float()[:, None]
    return keep(torch.addcmul(shift, centred, scale), span.m)


def adain_resblk(blk, x: torch.Tensor, s: torch.Tensor, span: Span, span_up: Span | None) -> torch.Tensor:
    """kokoro.istftnet.AdainResBlk1d with masking; `span_up` is the span at twice the length when the block upsamples."""
    r = blk.actv(adain(blk.norm1, x, s, span))
    if blk.upsample_type != "none":
        span = span_up
        r = keep(blk.pool(r), span.m)
    r = keep(blk.conv1(r), span.m)
    r = blk.actv(adain(blk.norm2, r, s, span))
    r = blk.conv2(r)
    return keep((r + blk._shortcut(x)) * (1 / math.sqrt(2)), span.m)


class _Snake(torch.autograd.Function):
    """x + sin²(αx)/α with its derivative written out, 1 + sin(2αx): the backward keeps only x (autograd's own
    would keep αx and sin(αx), both the size of the generator's largest activations) and runs three kernels."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, alpha)
        return x + (1 / alpha) * torch.sin(alpha * x) ** 2

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, alpha = ctx.saved_tensors
        twice = torch.sin(2 * alpha * x)
        grad_x = torch.addcmul(grad, grad, twice) if ctx.needs_input_grad[0] else None
        grad_alpha = None
        if ctx.needs_input_grad[1]:  # d/dα = x·sin(2αx)/α − sin²(αx)/α²
            d = x * twice / alpha - torch.sin(alpha * x) ** 2 / alpha**2
            grad_alpha = (grad * d).sum(dim=[i for i in range(d.dim()) if alpha.shape[i] == 1], keepdim=True)
        return grad_x, grad_alpha


def snake(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return _Snake.apply(x, alpha) if torch.is_grad_enabled() else x + (1 / alpha) * torch.sin(alpha * x) ** 2


def adain_resblock1(blk, x: torch.Tensor, s: torch.Tensor, span: Span) -> torch.Tensor:
    """kokoro.istftnet.AdaINResBlock1 (the generator's Snake residual block) with masking."""
    for c1, c2, n1, n2, a1, a2 in zip(blk.convs1, blk.convs2, blk.adain1, blk.adain2, blk.alpha1, blk.alpha2):
        xt = keep(c1(snake(adain(n1, x, s, span), a1)), span.m)
        xt = keep(c2(snake(adain(n2, xt, s, span), a2)), span.m)
        x = xt + x
    return x


@contextmanager
def recurrent(device: torch.device, differentiable: bool, *modules: nn.Module):
    """LSTMs (those inside `modules`) run in fp32 outside autocast. cuDNN runs an LSTM's backward only for a module
    in training mode, so while gradients are wanted the LSTMs are put in training mode: Kokoro's are one layer
    each, where an LSTM's dropout does nothing, so they compute the same. (Turning cuDNN off instead leaves them
    to the native kernel, one matrix product per frame: 15 % of a default search step on an H200.)"""
    lstms = [m for module in modules for m in module.modules()
             if isinstance(m, nn.RNNBase) and not m.training and (m.num_layers == 1 or m.dropout == 0)] if differentiable else []
    for lstm in lstms:
        lstm.train()
    try:
        with torch.autocast(device.type, enabled=False):
            yield
    finally:
        for lstm in lstms:
            lstm.eval()


def packed_lstm(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, C) -> (B, T, H), each item's sequence ending at its own length, zeros after."""
    packed = nn.utils.rnn.pack_padded_sequence(x.float(), lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed)
    out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out


# ----------------------------------------------------------------------------------------------- the pipeline

def text_features(model, input_ids: torch.Tensor) -> TextFeatures:
    """Style-free encodings of one token sequence `input_ids` (1, T) including the two pad tokens."""
    n = input_ids.shape[1]
    lengths = torch.full((1,), n, dtype=torch.long, device=input_ids.device)
    no_pad = torch.zeros(1, n, dtype=torch.bool, device=input_ids.device)
    with torch.no_grad(), recurrent(input_ids.device, False):
        bert = model.bert(input_ids, attention_mask=(~no_pad).int())
        d_en = model.bert_encoder(bert).transpose(-1, -2)
        t_en = model.text_encoder(input_ids, lengths, no_pad)
    return TextFeatures(d_en.float(), t_en.float(), n)


def predict_durations(model, text: TextFeatures, s_prosody: torch.Tensor, speed: float, differentiable: bool):
    """(d (B, T, 640) carrying gradients to the style, integer durations (B, T))."""
    B, T = s_prosody.shape[0], text.n_tokens
    lengths = torch.full((B,), T, dtype=torch.long)
    no_pad = torch.zeros(B, T, dtype=torch.bool, device=s_prosody.device)
    with recurrent(s_prosody.device, differentiable, model.predictor.text_encoder):
        d = model.predictor.text_encoder(text.d_en.expand(B, -1, -1), s_prosody.float(), lengths, no_pad)
        with torch.no_grad():
            x, _ = model.predictor.lstm(d.detach())
            raw = torch.sigmoid(model.predictor.duration_proj(x)).sum(dim=-1) / speed
    return d, torch.round(raw).clamp(min=1).long()


def align(features: torch.Tensor, durations: torch.Tensor, frames: int) -> torch.Tensor:
    """Repeat token features (B, C, T) by their durations (B, T) -> (B, C, frames), zeros past each item's end."""
    ends = durations.cumsum(-1)
    frame = torch.arange(frames, device=durations.device).expand(durations.shape[0], -1).contiguous()
    token = torch.searchsorted(ends, frame, right=True).clamp(max=durations.shape[1] - 1)
    out = features.expand(durations.shape[0], -1, -1).gather(2, token[:, None, :].expand(-1, features.shape[1], -1))
    return keep(out, lengths_mask(ends[:, -1], frames))


def prosody(model, en: torch.Tensor, s: torch.Tensor, frames: torch.Tensor, differentiable: bool):
    """ProsodyPredictor.F0Ntrain with masking: (F0, energy), each (B, 2 * frames_max)."""
    pred = model.predictor
    m1, m2 = Span.of(frames, en.shape[-1]), Span.of(2 * frames, 2 * en.shape[-1])
    with recurrent(en.device, differentiable, pred.shared):
        x = packed_lstm(pred.shared, en.transpose(1, 2), frames).transpose(1, 2)
    curves = []
    for blocks, proj in ((pred.F0, pred.F0_proj), (pred.N, pred.N_proj)):
        y, m = x, m1
        for block in blocks:
            up = block.upsample_type != "none"
            y = adain_resblk(block, y, s, m, m2 if up else None)
            m = m2 if up else m
        curves.append(keep(proj(y), m2.m).squeeze(1).float())
    return curves[0], curves[1]


def decode(dec, asr: torch.Tensor, f0: torch.Tensor, energy: torch.Tensor, s: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """kokoro.istftnet.Decoder up to the generator, masked: (B, 512, 2 * frames_max)."""
    m1, m2 = Span.of(frames, asr.shape[-1]), Span.of(2 * frames, 2 * asr.shape[-1])
    f0 = keep(dec.F0_conv(f0.unsqueeze(1)), m1.m)
    energy = keep(dec.N_conv(energy.unsqueeze(1)), m1.m)
    x = adain_resblk(dec.encode, torch.cat([asr, f0.to(asr.dtype), energy.to(asr.dtype)], dim=1), s, m1, None)
    asr_res = keep(dec.asr_res(asr), m1.m)
    residual = True
    for block in dec.decode:
        if residual:
            x = torch.cat([x, asr_res.to(x.dtype), f0.to(x.dtype), energy.to(x.dtype)], dim=1)
        up = block.upsample_type != "none"
        x = adain_resblk(block, x, s, m1, m2 if up else None)
        if up:
            residual = False
    return x


def hann(n_fft: int, device: torch.device) -> torch.Tensor:
    return torch.hann_window(n_fft, periodic=True, dtype=torch.float32, device=device)


def harmonic_source(gen, f0: torch.Tensor, frames: torch.Tensor, noise: NoiseBank | None) -> torch.Tensor:
    """The generator's sine excitation and its STFT, (B, n_fft + 2, K): no gradient, fp32, as in Kokoro.

    F0 is zero past each item's end, so the phase's cumulative sum stays flat there and the linear resampling
    of the phase matches Kokoro's edge clamping exactly; the STFT reflect-pads each item at its own end.
    """
    sine = gen.m_source.l_sin_gen
    n_fft, hop = gen.post_n_fft, gen.stft.hop_length
    with torch.no_grad(), torch.autocast(f0.device.type, enabled=False):
        f0 = gen.f0_upsamp(f0.float()[:, None]).transpose(1, 2)  # (B, L, 1)
        B, L = f0.shape[0], f0.shape[1]
        fn = f0 * torch.arange(1, sine.harmonic_num + 2, device=f0.device, dtype=f0.dtype)
        rad = (fn / sine.sampling_rate) % 1
        if noise is None:
            phase0 = torch.rand(B, sine.dim, device=f0.device)
            phase0[:, 0] = 0
            eps = torch.randn(B, L, sine.dim, device=f0.device)
        else:
            phase0 = noise.initial_phase.to(f0.device)[None]
            eps = noise.noise(L, f0.device)[None]
        rad[:, 0, :] = rad[:, 0, :] + phase0
        rad = F.interpolate(rad.transpose(1, 2), scale_factor=1 / sine.upsample_scale, mode="linear").transpose(1, 2)
        phase = torch.cumsum(rad, dim=1) * 2 * torch.pi
        phase = F.interpolate(phase.transpose(1, 2) * sine.upsample_scale, scale_factor=sine.upsample_scale, mode="linear")
        sines = torch.sin(phase.transpose(1, 2)) * sine.sine_amp
        uv = (f0 > sine.voiced_threshold).float()
        amp = uv * sine.noise_std + (1 - uv) * sine.sine_amp / 3
        waves = sines * uv + amp * eps
        source = torch.tanh(gen.m_source.l_linear(waves)).squeeze(-1)  # (B, L)

        samples = frames * SAMPLES_PER_FRAME
        pos = torch.arange(-(n_fft // 2), L + n_fft // 2, device=f0.device).expand(B, -1)
        last = (samples - 1)[:, None]
        idx = pos.abs()
        idx = torch.where(idx > last, 2 * last - idx, idx).clamp(0, L - 1)
        spec = torch.stft(source.gather(1, idx), n_fft, hop, n_fft, window=hann(n_fft, f0.device), center=False, return_complex=True)
        har = torch.cat([spec.abs(), spec.angle()], dim=1)
        return keep(har, lengths_mask(samples // hop + 1, har.shape[-1]))


def istft(spec: torch.Tensor, phase: torch.Tensor, n_fft: int, hop: int, valid_frames: torch.Tensor) -> torch.Tensor:
    """torch.istft(center=True) per item with each item's own frame count (its own window envelope); differentiable."""
    K = spec.shape[-1]
    m = lengths_mask(valid_frames, K)
    spec = keep(spec, m)
    z = torch.complex(spec * torch.cos(phase), spec * torch.sin(phase))
    window = hann(n_fft, spec.device)
    frames = torch.fft.irfft(z, n=n_fft, dim=1) * window[None, :, None]
    size = (1, n_fft + hop * (K - 1))
    ola = F.fold(frames, size, kernel_size=(1, n_fft), stride=(1, hop)).flatten(1)
    envelope = F.fold((window**2)[None, :, None] * m.float(), size, kernel_size=(1, n_fft), stride=(1, hop)).flatten(1)
    ok = envelope > 1e-11
    y = torch.where(ok, ola / torch.where(ok, envelope, torch.ones_like(envelope)), torch.zeros_like(ola))
    return y[:, n_fft // 2 : n_fft // 2 + hop * (K - 1)]


def generate(gen, x: torch.Tensor, s: torch.Tensor, har: torch.Tensor, frames: torch.Tensor,
             checkpoint: bool = False) -> torch.Tensor:
    """kokoro.istftnet.Generator after its source module, masked: waveforms (B, 600 * frames_max).

    `checkpoint` keeps only each Snake residual block's input for the backward pass and recomputes the block's
    inside there: the blocks at 20x and 120x the frame rate hold most of a differentiable render's memory.
    """
    block = _checkpointed if checkpoint and torch.is_grad_enabled() else adain_resblock1
    # Lengths of each item at the two upsampled rates: 2F frames -> 20F -> 120F (+1 from the reflection pad).
    item_len = 2 * frames
    for i in range(gen.num_upsamples):
        x = F.leaky_relu(x, negative_slope=0.1)
        x = gen.ups[i](x)
        if i == gen.num_upsamples - 1:
            x = gen.reflection_pad(x)
            item_len = item_len * gen.ups[i].stride[0] + 1
        else:
            item_len = item_len * gen.ups[i].stride[0]
        m = Span.of(item_len, x.shape[-1])
        source = block(gen.noise_res[i], keep(gen.noise_convs[i](har), m.m), s, m)
        x = keep(x, m.m) + source
        xs = None
        for j in range(gen.num_kernels):
            y = block(gen.resblocks[i * gen.num_kernels + j], x, s, m)
            xs = y if xs is None else xs + y
        x = xs / gen.num_kernels
    x = gen.conv_post(F.leaky_relu(x)).float()
    with torch.autocast(x.device.type, enabled=False):
        bins = gen.post_n_fft // 2 + 1
        spec, phase = torch.exp(x[:, :bins]), torch.sin(x[:, bins:])
        return istft(spec, phase, gen.post_n_fft, gen.stft.hop_length, item_len)


def _checkpointed(blk, x: torch.Tensor, s: torch.Tensor, m: Span) -> torch.Tensor:
    from torch.utils.checkpoint import checkpoint

    return checkpoint(adain_resblock1, blk, x, s, m, use_reentrant=False)


def synthesize(
    model,
    text: TextFeatures,
    styles: torch.Tensor,
    *,
    speed: float = 1.0,
    differentiable: bool = False,
    noise: NoiseBank | None = None,
    held: Held | None = None,
    stage: Callable[[str], object] | None = None,
    generate_fn: Callable[..., torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, Held]:
    """B styles (B, 256) speak `text`: (waves (B, L) fp32 zero-padded, lengths (B,) in samples, held quantities).

    Gradients reach `styles` when `differentiable`: columns 0-127 through the decoder's AdaIN, 128-255 through the
    predictor's F0/energy and its AdaIN. Durations and the harmonic source are constants, as in Kokoro.
    """
    stage = stage or (lambda name: nullcontext())
    s_dec, s_pros = styles[:, :128], styles[:, 128:]
    with torch.set_grad_enabled(differentiable):
        with stage("predictor"):
            d, durations = predict_durations(model, text, s_pros, speed, differentiable)
            if held is not None:
                durations = held.durations.to(durations.device)
            frames = durations.sum(-1)
            n_frames = int(frames.max())
            en = align(d.transpose(1, 2), durations, n_frames)
            # F0 stays fp32 under bf16/fp16 autocast: the sine source integrates it into phase (cheap at frame rate)
            with torch.autocast(en.device.type, enabled=False):
                f0, energy = prosody(model, en.float(), s_pros.float(), frames, differentiable)
        with stage("decoder"):
            asr = align(text.t_en, durations, n_frames)
            x = decode(model.decoder, asr, f0, energy, s_dec, frames)
        gen = model.decoder.generator
        with stage("source"):
            har = harmonic_source(gen, f0, frames, noise) if held is None else held.source.to(f0.device)
        with stage("generator"):
            samples = frames * SAMPLES_PER_FRAME
            # the last window overlaps 10 samples past an item's end: zero them, as a render of the item alone ends there
            wave = keep((generate_fn or generate)(gen, x, s_dec, har, frames), lengths_mask(samples, frames.max() * SAMPLES_PER_FRAME)[:, 0])
    return wave, samples, Held(durations, har, f0)  # f0 is zero past each item's end (prosody masks it)
