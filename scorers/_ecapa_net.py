"""ECAPA-TDNN speaker encoder (Desplanques et al. 2020) with SpeechBrain's module layout.

Parameter names match SpeechBrain's `speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN` so the
`spkrec-ecapa-voxceleb` checkpoint loads strictly. Written from the paper and SpeechBrain's public
description; SpeechBrain itself cannot be imported here (it needs torchaudio).

Batches of different lengths: SpeechBrain pads every "same" convolution by reflection at the end
of the *padded* tensor, so a short item's last frames depend on what else is in the batch. Here each
item is reflected at its own last frame (a gather per padded convolution), so an item's embedding
is the same alone or in any batch, and equal to SpeechBrain's single-item result.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FrameContext:
    """Per-forward helper: valid frame counts (B,), the (B, 1, T) mask, and cached reflect indices."""

    def __init__(self, frames: torch.Tensor, length: int):
        self.frames = frames
        self.length = length
        self.uniform = bool((frames == length).all())
        self.mask = (torch.arange(length, device=frames.device)[None] < frames[:, None]).unsqueeze(1).float()
        self._reflect: dict[int, torch.Tensor] = {}

    def reflect_pad(self, x: torch.Tensor, pad: int) -> torch.Tensor:
        if pad == 0:
            return x
        if self.uniform:
            return F.pad(x, (pad, pad), mode="reflect")
        if pad not in self._reflect:
            t = torch.arange(-pad, self.length + pad, device=x.device)[None]
            last = (self.frames[:, None] - 1).clamp_min(0)
            t = t.abs()  # reflect at frame 0
            t = torch.where(t > last, 2 * last - t, t)  # reflect at each item's own last frame
            self._reflect[pad] = t.clamp(0, self.length - 1)
        index = self._reflect[pad]
        return x.gather(2, index[:, None, :].expand(x.shape[0], x.shape[1], -1))


class Conv(nn.Module):
    """'same' 1-D convolution with reflect padding (SpeechBrain's Conv1d with skip_transpose)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1):
        super().__init__()
        self.pad = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation)

    def forward(self, x: torch.Tensor, ctx: FrameContext) -> torch.Tensor:
        return self.conv(ctx.reflect_pad(x, self.pad))


class BatchNorm(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(channels, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class TDNNBlock(nn.Module):
    """conv -> ReLU -> BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.conv = Conv(in_channels, out_channels, kernel_size, dilation)
        self.norm = BatchNorm(out_channels)

    def forward(self, x: torch.Tensor, ctx: FrameContext) -> torch.Tensor:
        return self.norm(torch.relu(self.conv(x, ctx)))


class Res2NetBlock(nn.Module):
    """Split channels in `scale` groups; group i>0 goes through a TDNN after adding group i-1's output."""

    def __init__(self, channels: int, scale: int, kernel_size: int, dilation: int):
        super().__init__()
        self.scale = scale
        width = channels // scale
        self.blocks = nn.ModuleList(TDNNBlock(width, width, kernel_size, dilation) for _ in range(scale - 1))

    def forward(self, x: torch.Tensor, ctx: FrameContext) -> torch.Tensor:
        chunks = torch.chunk(x, self.scale, dim=1)
        out = [chunks[0]]
        y = None
        for i, block in enumerate(self.blocks, start=1):
            y = block(chunks[i] if y is None else chunks[i] + y, ctx)
            out.append(y)
        return torch.cat(out, dim=1)


class SEBlock(nn.Module):
    """Squeeze-excitation over the valid frames."""

    def __init__(self, channels: int, se_channels: int):
        super().__init__()
        self.conv1 = Conv(channels, se_channels)
        self.conv2 = Conv(se_channels, channels)

    def forward(self, x: torch.Tensor, ctx: FrameContext) -> torch.Tensor:
        s = (x * ctx.mask).sum(2, keepdim=True) / ctx.mask.sum(2, keepdim=True)
        s = torch.sigmoid(self.conv2(torch.relu(self.conv1(s, ctx)), ctx))
        return s * x


class SERes2NetBlock(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilation: int, scale: int, se_channels: int):
        super().__init__()
        self.tdnn1 = TDNNBlock(channels, channels, 1, 1)
        self.res2net_block = Res2NetBlock(channels, scale, kernel_size, dilation)
        self.tdnn2 = TDNNBlock(channels, channels, 1, 1)
        self.se_block = SEBlock(channels, se_channels)

    def forward(self, x: torch.Tensor, ctx: FrameContext) -> torch.Tensor:
        y = self.tdnn2(self.res2net_block(self.tdnn1(x, ctx), ctx), ctx)
        return self.se_block(y, ctx) + x


def _masked_stats(x: torch.Tensor, weights: torch.Tensor, eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    mean = (weights * x).sum(2)
    std = (weights * (x - mean.unsqueeze(2)).pow(2)).sum(2).clamp(eps).sqrt()
    return mean, std


class AttentiveStatsPool(nn.Module):
    """Attentive statistics pooling with global context (utterance mean/std appended to each frame)."""

    def __init__(self, channels: int, attention_channels: int):
        super().__init__()
        self.tdnn = TDNNBlock(channels * 3, attention_channels, 1, 1)
        self.conv = Conv(attention_channels, channels)

    def forward(self, x: torch.Tensor, ctx: FrameContext) -> torch.Tensor:
        mean, std = _masked_stats(x, ctx.mask / ctx.mask.sum(2, keepdim=True))
        # The 1x1 conv over [x; mean; std] (3C channels, mean/std repeated over time) is split into
        # W_x x + (W_m mean + W_s std + b): same result without materialising the (B, 3C, T) tensor.
        channels = x.shape[1]
        weight, bias = self.tdnn.conv.conv.weight[:, :, 0], self.tdnn.conv.conv.bias
        utterance = mean @ weight[:, channels : 2 * channels].T + std @ weight[:, 2 * channels :].T + bias
        hidden = F.conv1d(x, weight[:, :channels, None]) + utterance[:, :, None]
        attn = self.conv(torch.tanh(self.tdnn.norm(torch.relu(hidden))), ctx)
        attn = torch.softmax(attn.masked_fill(ctx.mask == 0, float("-inf")), dim=2)
        mean, std = _masked_stats(x, attn)
        return torch.cat([mean, std], 1).unsqueeze(2)


class ECAPATDNN(nn.Module):
    """(B, T, n_mels) features + valid frame counts (B,) -> (B, lin_neurons) embeddings (not normalised)."""

    def __init__(
        self,
        input_size: int = 80,
        channels: tuple[int, ...] = (1024, 1024, 1024, 1024, 3072),
        kernel_sizes: tuple[int, ...] = (5, 3, 3, 3, 1),
        dilations: tuple[int, ...] = (1, 2, 3, 4, 1),
        attention_channels: int = 128,
        res2net_scale: int = 8,
        se_channels: int = 128,
        lin_neurons: int = 192,
    ):
        super().__init__()
        self.blocks = nn.ModuleList([TDNNBlock(input_size, channels[0], kernel_sizes[0], dilations[0])])
        for i in range(1, len(channels) - 1):
            if channels[i] != channels[i - 1]:
                raise ValueError("this ECAPA-TDNN keeps a constant width across SE-Res2Net blocks")
            self.blocks.append(SERes2NetBlock(channels[i], kernel_sizes[i], dilations[i], res2net_scale, se_channels))
        self.mfa = TDNNBlock(channels[-2] * (len(channels) - 2), channels[-1], kernel_sizes[-1], dilations[-1])
        self.asp = AttentiveStatsPool(channels[-1], attention_channels)
        self.asp_bn = BatchNorm(channels[-1] * 2)
        self.fc = Conv(channels[-1] * 2, lin_neurons)

    def forward(self, feats: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        x = feats.transpose(1, 2)
        ctx = FrameContext(frames, x.shape[2])
        outputs = []
        for block in self.blocks:
            x = block(x, ctx)
            outputs.append(x)
        x = self.mfa(torch.cat(outputs[1:], dim=1), ctx)
        x = self.asp_bn(self.asp(x, ctx))
        return self.fc(x, ctx).squeeze(2)
