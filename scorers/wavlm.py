"""WavLM x-vector speaker similarity (transformers `WavLMForXVector`), batched, masked and differentiable.

Default weights: `microsoft/wavlm-base-plus-sv` from the Hugging Face hub (cached by huggingface_hub).
They are not on PyPI, so offline users point `model=` at a local copy of that folder
(`--scorer-opt model=/path/to/wavlm-base-plus-sv`); a `WavLMForXVector` or `WavLMConfig` object works too
(tests build a tiny random one).

Pipeline for a batch at 16 kHz: the feature extractor's optional zero-mean/unit-variance normalisation,
done per item over its own samples in torch; zero padding + attention mask; x-vector head; L2 norm.
Batched results equal per-item ones: the attention mask covers the transformer and the statistics
pooling, and the one layer the mask does not reach in transformers — the first convolution's
GroupNorm (base models, `feat_extract_norm="group"`), whose statistics run over time — is swapped for
a GroupNorm that takes its statistics over each item's valid frames only.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from voicesearch.errors import InputError
from voicesearch.types import AudioBatch

from .embedding import EmbeddingScorer, SpeakerEmbedder

DEFAULT_MODEL = "microsoft/wavlm-base-plus-sv"
NORMALIZE_EPS = 1e-7  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm


class MaskedGroupNorm(nn.Module):
    """Per-channel GroupNorm over time whose statistics skip frames past each item's length.

    `input_lengths` (B,) in samples is set by the embedder before each forward; None = plain GroupNorm.
    """

    def __init__(self, norm: nn.GroupNorm, conv: nn.Conv1d):
        super().__init__()
        if norm.num_groups != norm.num_channels:
            raise ValueError("MaskedGroupNorm expects one group per channel (WavLM's first conv layer)")
        self.norm = norm
        self.kernel, self.stride = conv.kernel_size[0], conv.stride[0]
        self.input_lengths: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_lengths is None:
            return self.norm(x)
        frames = ((self.input_lengths - self.kernel) // self.stride + 1).clamp_min(1).to(x.device)
        mask = (torch.arange(x.shape[-1], device=x.device)[None] < frames[:, None]).to(x.dtype)[:, None, :]
        n = frames.to(x.dtype)[:, None, None]
        mean = (x * mask).sum(-1, keepdim=True) / n
        var = ((x - mean).pow(2) * mask).sum(-1, keepdim=True) / n
        y = (x - mean) / (var + self.norm.eps).sqrt()
        if self.norm.affine:
            y = y * self.norm.weight[None, :, None] + self.norm.bias[None, :, None]
        return y


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or "\\" in source or Path(source).expanduser().exists()


def load_model(source: Any) -> tuple[nn.Module, bool | None]:
    """(WavLMForXVector, do_normalize from its feature-extractor config or None when unknown)."""
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    if isinstance(source, WavLMForXVector):
        return source, None
    if isinstance(source, WavLMConfig):
        return WavLMForXVector(source), None
    if not isinstance(source, (str, Path)):
        raise InputError(f"wavlm model must be a hub id or a folder, got {type(source).__name__}")
    source = str(source)
    local = _looks_like_path(source)
    if local:
        path = Path(source).expanduser()
        if not path.is_dir():
            raise InputError(f"wavlm model folder {path} does not exist; give a local copy of {DEFAULT_MODEL} (config.json + weights)")
        source = str(path)
    try:
        model = WavLMForXVector.from_pretrained(source, local_files_only=local)
    except Exception as e:  # offline hub, missing files, wrong architecture: transformers raises many kinds
        where = f"the folder {source}" if local else f"the Hugging Face hub ({source})"
        raise InputError(f"cannot load WavLM x-vector weights from {where}: {type(e).__name__}. The weights are hub-only: "
                         f"go online once, or download {DEFAULT_MODEL} and pass --scorer-opt model=/path/to/it") from None
    try:
        extractor = Wav2Vec2FeatureExtractor.from_pretrained(source, local_files_only=True if local else None)
        do_normalize = bool(extractor.do_normalize)
    except Exception:
        do_normalize = None
    return model, do_normalize


class WavLMEmbedder(SpeakerEmbedder):
    """`embed(AudioBatch) -> (B, D)` unit x-vectors from a `WavLMForXVector` (see module doc)."""

    sample_rate: ClassVar[int] = 16000
    target_window_s: ClassVar[float | None] = 20.0  # self-attention cost grows with length squared

    def __init__(self, model: nn.Module, normalize: bool = True):
        super().__init__()
        self.model = model.eval()
        self.normalize = normalize
        self.dim = int(model.config.xvector_output_dim)
        first = model.wavlm.feature_extractor.conv_layers[0]
        self.masked_norm: MaskedGroupNorm | None = None
        if isinstance(getattr(first, "layer_norm", None), nn.GroupNorm):
            self.masked_norm = first.layer_norm = MaskedGroupNorm(first.layer_norm, first.conv)

    def forward_embed(self, audio: AudioBatch) -> torch.Tensor:
        wave, lengths = audio.wave, audio.lengths.clamp_min(1)
        mask = torch.arange(wave.shape[1], device=wave.device)[None] < lengths[:, None]
        wave = wave * mask
        if self.normalize:
            n = lengths.to(wave.dtype)[:, None]
            mean = wave.sum(1, keepdim=True) / n
            var = ((wave - mean).pow(2) * mask).sum(1, keepdim=True) / n
            wave = (wave - mean) / (var + NORMALIZE_EPS).sqrt() * mask
        if self.masked_norm is not None:
            self.masked_norm.input_lengths = lengths
        try:
            emb = self.xvector(wave, mask, lengths)
        finally:
            if self.masked_norm is not None:
                self.masked_norm.input_lengths = None
        return emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def xvector(self, wave: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """`WavLMForXVector`'s embedding head, with statistics pooling over each item's valid TDNN frames.

        transformers computes the TDNN output lengths without the dilations, so its pooling takes a few
        frames that saw padding; here the lengths include them (a single unpadded item is unaffected).
        """
        m, config = self.model, self.model.config
        with warnings.catch_warnings():  # transformers pairs a bool padding mask with a float bias; harmless
            warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")
            out = m.wavlm(wave, attention_mask=mask.long(), output_hidden_states=config.use_weighted_layer_sum)
        if config.use_weighted_layer_sum:
            weights = torch.softmax(m.layer_weights, dim=-1)
            hidden = (torch.stack(out.hidden_states, 1) * weights[None, :, None, None]).sum(1)
        else:
            hidden = out.last_hidden_state
        hidden = m.projector(hidden)
        for layer in m.tdnn:
            hidden = layer(hidden)
        frames = m._get_feat_extract_output_lengths(lengths)
        for kernel, dilation in zip(config.tdnn_kernel, config.tdnn_dilation):
            frames = frames - dilation * (kernel - 1)
        frames = frames.clamp_min(2)  # the std below needs two frames
        valid = (torch.arange(hidden.shape[1], device=hidden.device)[None] < frames[:, None]).to(hidden.dtype)[..., None]
        n = frames.to(hidden.dtype)[:, None]
        mean = (hidden * valid).sum(1) / n
        var = ((hidden - mean[:, None]).pow(2) * valid).sum(1) / (n - 1)  # unbiased, as torch.std
        std = var.clamp_min(1e-20).sqrt()  # a channel ReLU'd to zero would give 0 * inf = NaN gradients
        return m.feature_extractor(torch.cat([mean, std], -1))


class WavLMScorer(EmbeddingScorer):
    """Cosine similarity of WavLM x-vectors (microsoft/wavlm-base-plus-sv) to the target speaker.

    Options: `model` (hub id, local folder, or a WavLMForXVector / WavLMConfig object),
    `normalize` ("auto": the model's feature-extractor setting, True when unknown | true | false),
    plus `EmbeddingScorer`'s (`device`, `target_sampling`, `seed`, `target_window_s`).
    """

    name: ClassVar[str] = "wavlm"
    text_independent: ClassVar[bool] = True  # a speaker embedding: any words will do (voicesearch.cpu)

    def __init__(self, device: str | torch.device = "cpu", model: Any = DEFAULT_MODEL, normalize: bool | str = "auto",
                 **options: Any):
        super().__init__(device=device, **options)
        if normalize not in ("auto", True, False):
            raise InputError(f"wavlm normalize must be auto, true or false, got {normalize!r}")
        if isinstance(model, (str, Path)) and _looks_like_path(str(model)) and not Path(str(model)).expanduser().is_dir():
            raise InputError(f"wavlm model folder {model} does not exist; give a local copy of {DEFAULT_MODEL}")
        self.model_source, self.normalize = model, normalize

    def build_embedder(self) -> WavLMEmbedder:
        model, do_normalize = load_model(self.model_source)
        normalize = (True if do_normalize is None else do_normalize) if self.normalize == "auto" else bool(self.normalize)
        return WavLMEmbedder(model, normalize)
