"""CAM++ speaker encoder (Wang et al. 2023, 3D-Speaker) with 3D-Speaker's module layout, batched over lengths.

Parameter names match `speakerlab.models.campplus.DTDNN.CAMPPlus`, so 3D-Speaker checkpoints load strictly.
The embedding layer is 3D-Speaker's (`batchnorm_`: affine-free BatchNorm, no ReLU).

Batches of different lengths: 3D-Speaker runs one utterance at a time. Here every temporal convolution
sees zeros past each item's own last frame (what its zero padding gives a lone item), and the frame mean,
the 100-frame segment means and the statistics pooling count each item's own frames only, so an item's
embedding is the same alone or in any batch.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

SEG_LEN = 100


class Frames:
    """Valid frame counts (B,) of a padded (..., T) tensor, and the masks that go with them."""

    def __init__(self, counts: torch.Tensor, length: int):
        self.counts, self.length = counts, length
        self.uniform = bool((counts == length).all())
        self.mask = (torch.arange(length, device=counts.device)[None] < counts[:, None]).float()  # (B, T)

    def zero_tail(self, x: torch.Tensor) -> torch.Tensor:
        """Zero frames past each item's end (time is the last axis of x)."""
        if self.uniform:
            return x
        return x * self.mask.view(x.shape[0], *([1] * (x.dim() - 2)), self.length)

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, C, 1) mean over each item's frames."""
        if self.uniform:
            return x.mean(-1, keepdim=True)
        return (x * self.mask[:, None]).sum(-1, keepdim=True) / self.counts[:, None, None]

    def segment_means(self, x: torch.Tensor) -> torch.Tensor:
        """3D-Speaker's `seg_pooling`: each frame gets the mean of its 100-frame segment (a short last one too)."""
        b, c, t = x.shape
        n = -(-t // SEG_LEN)
        padded = F.pad(self.zero_tail(x), (0, n * SEG_LEN - t)).view(b, c, n, SEG_LEN)
        starts = torch.arange(n, device=x.device) * SEG_LEN
        size = (self.counts[:, None] - starts[None]).clamp(1, SEG_LEN).to(x.dtype)  # (B, n)
        seg = padded.sum(-1) / size[:, None]
        return seg.repeat_interleave(SEG_LEN, dim=2)[..., :t]

    def halved(self) -> "Frames":
        """Frames after a stride-2, kernel-5, padding-2 convolution."""
        return Frames((self.counts - 1) // 2 + 1, (self.length - 1) // 2 + 1)


def _nonlinear(channels: int, affine: bool = True, relu: bool = True) -> nn.Sequential:
    layers = [("batchnorm", nn.BatchNorm1d(channels, affine=affine))] + ([("relu", nn.ReLU())] if relu else [])
    return nn.Sequential(OrderedDict(layers))


class BasicResBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=(stride, 1), bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor, frames: Frames) -> torch.Tensor:
        out = frames.zero_tail(F.relu(self.bn1(self.conv1(x))))
        return frames.zero_tail(F.relu(self.bn2(self.conv2(out)) + self.shortcut(x)))


class FCM(nn.Module):
    """2-D residual front end over (frequency, time); strides only along frequency."""

    def __init__(self, m_channels: int = 32, feat_dim: int = 80):
        super().__init__()
        self.conv1 = nn.Conv2d(1, m_channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m_channels)
        self.layer1 = nn.ModuleList([BasicResBlock(m_channels, m_channels, 2), BasicResBlock(m_channels, m_channels)])
        self.layer2 = nn.ModuleList([BasicResBlock(m_channels, m_channels, 2), BasicResBlock(m_channels, m_channels)])
        self.conv2 = nn.Conv2d(m_channels, m_channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(m_channels)
        self.out_channels = m_channels * (feat_dim // 8)

    def forward(self, x: torch.Tensor, frames: Frames) -> torch.Tensor:
        out = frames.zero_tail(F.relu(self.bn1(self.conv1(x.unsqueeze(1)))))
        for block in (*self.layer1, *self.layer2):
            out = block(out, frames)
        out = F.relu(self.bn2(self.conv2(out)))
        return out.reshape(out.shape[0], -1, out.shape[-1])


class TDNNLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.linear = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride,
                                padding=(kernel_size - 1) // 2, bias=False)
        self.nonlinear = _nonlinear(out_channels)

    def forward(self, x: torch.Tensor, frames: Frames) -> torch.Tensor:
        return self.nonlinear(self.linear(frames.zero_tail(x)))


class CAMLayer(nn.Module):
    """Context-aware masking: a local conv gated by utterance-mean + segment-mean context."""

    def __init__(self, bn_channels: int, out_channels: int, kernel_size: int, dilation: int, reduction: int = 2):
        super().__init__()
        self.linear_local = nn.Conv1d(bn_channels, out_channels, kernel_size,
                                      padding=(kernel_size - 1) // 2 * dilation, dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(bn_channels, bn_channels // reduction, 1)
        self.relu = nn.ReLU()
        self.linear2 = nn.Conv1d(bn_channels // reduction, out_channels, 1)

    def forward(self, x: torch.Tensor, frames: Frames) -> torch.Tensor:
        y = self.linear_local(frames.zero_tail(x))
        context = frames.mean(x) + frames.segment_means(x)
        return y * torch.sigmoid(self.linear2(self.relu(self.linear1(context))))


class CAMDenseTDNNLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, bn_channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.nonlinear1 = _nonlinear(in_channels)
        self.linear1 = nn.Conv1d(in_channels, bn_channels, 1, bias=False)
        self.nonlinear2 = _nonlinear(bn_channels)
        self.cam_layer = CAMLayer(bn_channels, out_channels, kernel_size, dilation)

    def forward(self, x: torch.Tensor, frames: Frames) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))), frames)


class CAMDenseTDNNBlock(nn.ModuleDict):
    def __init__(self, num_layers: int, in_channels: int, growth: int, bn_channels: int, kernel_size: int,
                 dilation: int):
        super().__init__({f"tdnnd{i + 1}": CAMDenseTDNNLayer(in_channels + i * growth, growth, bn_channels,
                                                             kernel_size, dilation) for i in range(num_layers)})

    def forward(self, x: torch.Tensor, frames: Frames) -> torch.Tensor:
        for layer in self.values():
            x = torch.cat([x, layer(x, frames)], dim=1)
        return x


class TransitLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.nonlinear = _nonlinear(in_channels)
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class DenseLayer(nn.Module):
    """Embedding layer: 1x1 conv then affine-free BatchNorm (3D-Speaker's `batchnorm_`)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        self.nonlinear = _nonlinear(out_channels, affine=False, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))


def stats_pool(x: torch.Tensor, frames: Frames, eps: float = 1e-2) -> torch.Tensor:
    """Mean and unbiased standard deviation over each item's frames (3D-Speaker's `statistics_pooling`)."""
    mean = frames.mean(x)
    var = (frames.zero_tail(x - mean).pow(2)).sum(-1) / (frames.counts[:, None] - 1).clamp_min(1)
    std = torch.where(frames.counts[:, None] > 1, var.clamp_min(1e-12).sqrt(), torch.full_like(var, eps))
    return torch.cat([mean.squeeze(-1), std], dim=-1)


class CAMPPlus(nn.Module):
    """(B, T, feat_dim) features + valid frame counts (B,) -> (B, embedding_size) embeddings (not normalised)."""

    def __init__(self, feat_dim: int = 80, embedding_size: int = 192, growth_rate: int = 32, bn_size: int = 4,
                 init_channels: int = 128):
        super().__init__()
        self.head = FCM(feat_dim=feat_dim)
        channels = self.head.out_channels
        self.xvector = nn.ModuleDict({"tdnn": TDNNLayer(channels, init_channels, 5, stride=2)})
        channels = init_channels
        for i, (num_layers, kernel_size, dilation) in enumerate(((12, 3, 1), (24, 3, 2), (16, 3, 2))):
            self.xvector[f"block{i + 1}"] = CAMDenseTDNNBlock(num_layers, channels, growth_rate,
                                                              bn_size * growth_rate, kernel_size, dilation)
            channels += num_layers * growth_rate
            self.xvector[f"transit{i + 1}"] = TransitLayer(channels, channels // 2)
            channels //= 2
        self.xvector["out_nonlinear"] = _nonlinear(channels)
        self.xvector["dense"] = DenseLayer(channels * 2, embedding_size)

    def forward(self, feats: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        frames = Frames(counts, feats.shape[1])
        x = self.head(frames.zero_tail(feats.transpose(1, 2)), frames)
        xv = self.xvector
        x = xv["tdnn"](x, frames)
        frames = frames.halved()
        for i in (1, 2, 3):
            x = xv[f"transit{i}"](xv[f"block{i}"](x, frames))
        x = xv["out_nonlinear"](x)
        return xv["dense"](stats_pool(x, frames))
