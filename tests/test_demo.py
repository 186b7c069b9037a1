"""The demo's stock set: the American and British female voices, never the hidden blend's voices."""
from __future__ import annotations

from voicesearch.demo import DEMO, DEMO_STOCK_PREFIXES, demo_exclude, stock_names


def test_demo_searches_the_en_female_voices_minus_the_hidden_ones(voices_dir):
    names = stock_names(voices_dir)
    excluded = demo_exclude(names)
    kept = [n for n in names if n not in excluded]
    assert set(DEMO["voices"]) <= set(excluded) and not set(DEMO["voices"]) & set(kept)
    assert kept and all(n.startswith(DEMO_STOCK_PREFIXES) for n in kept)
    assert set(kept) | set(excluded) == set(names)
    if len(names) == 54:  # Kokoro v1.0's stock: 11 af_ + 4 bf_ voices, minus af_bella and af_nicole
        assert len(kept) == 13


def test_hidden_voices_are_excluded_even_when_missing_from_the_stock():
    excluded = demo_exclude(["af_heart", "am_adam", "bf_emma", "jf_alpha"])
    assert excluded[:2] == DEMO["voices"]
    assert set(excluded[2:]) == {"am_adam", "jf_alpha"}
