"""Built-in strategies on a cheap real problem: recover a stock voice left out of the stock set.

The problem: a small differentiable "renderer" turns the pack row Kokoro would use for the text into a
waveform (tanh of a fixed random projection); the scorer is the cosine of fixed random embeddings of
those waveforms. The hidden target is af_heart; the search only knows the other 53 voices. Every
strategy must beat the best remaining stock voice (or its own start) on a small budget, and a run
interrupted by a checkpoint must resume to exactly the same asks.
"""
from __future__ import annotations

import pytest
import torch

from strategies.chain import Chain
from strategies.cma_es import CMAES
from strategies.fd_adam import FiniteDifferenceAdam
from strategies.gradient import GradientAscent
from strategies.interpolate import InterpolationSearch
from strategies.nevergrad_adapter import NevergradStrategy
from strategies.random_walk import RandomWalk
from strategies.spaces import PCASpace
from voicesearch import registry
from voicesearch.errors import InputError
from voicesearch.loop import Budget, Callback, Search
from voicesearch.renderer import Renders
from voicesearch.run import load_checkpoint, save_checkpoint
from voicesearch.scorer import Scorer
from voicesearch.space import FullPackSpace
from voicesearch.types import AudioBatch, ScoreResult, TargetSpeech

TEXT = "Hello there, this is a test."
HIDDEN = "af_heart"


class ProjectionRenderer:
    """'Audio' = tanh of a fixed random projection of the pack row used for the text (differentiable)."""

    sample_rate = 24000
    device = torch.device("cpu")

    def __init__(self, samples: int = 256):
        self.weight = torch.randn(256, samples, generator=torch.Generator().manual_seed(0)) / 16

    def render(self, packs, text, *, speed=1.0, differentiable=False):
        wave = torch.tanh(packs[:, min(len(text), 509), :] @ self.weight)
        return AudioBatch(wave, torch.full((packs.shape[0],), wave.shape[1]), self.sample_rate)


class ProjectionScorer(Scorer):
    """Cosine of random 32-d embeddings of the waveform (unit-norm, like a speaker embedding)."""

    differentiable = True

    def __init__(self, device="cpu"):
        super().__init__(device)
        self.weight = torch.randn(256, 32, generator=torch.Generator().manual_seed(1))

    def embed(self, wave):
        e = wave @ self.weight
        return e / e.norm(dim=1, keepdim=True)

    def prepare(self, target):
        return self.embed(torch.stack(target.clips))[0]

    def score(self, renders, state):
        emb = self.embed(renders.audio(0).wave)
        sim = emb @ state
        return ScoreResult(total=sim, parts={"similarity": sim}, embeddings=emb)


class StagedProjectionScorer(ProjectionScorer):
    """KVoiceWalk's early exit on the projection problem: a candidate whose similarity is not above 0.98 x the
    similarity of the best so far scores 0; `reset_reference` forgets that best (as HybridScorer does)."""

    def __init__(self, device="cpu"):
        super().__init__(device)
        self.best = None

    def reset_reference(self):
        self.best = None

    def score(self, renders, state):
        result = super().score(renders, state)
        sim = result.total
        passed = sim > (0.98 * self.best if self.best is not None else -2.0)
        total = torch.where(passed, 100 * sim, torch.zeros_like(sim))
        if passed.any():
            self.best = max(self.best or -1.0, float(sim[passed].max()))
        return ScoreResult(total=total, parts={"similarity": sim}, embeddings=result.embeddings)


class Asks(Callback):
    def __init__(self):
        self.asks: list[torch.Tensor] = []
        self.grad_steps = 0

    def on_step(self, search, x, result, improved):
        self.asks.append(x.clone())
        self.grad_steps += result.grad is not None


@pytest.fixture(scope="module")
def problem(stock):
    renderer, scorer = ProjectionRenderer(), ProjectionScorer()
    target = TargetSpeech([renderer.render(stock[HIDDEN][None], TEXT).wave[0]], [TEXT], 24000)
    rest = stock.without(HIDDEN)
    scores = scorer.score(Renders(renderer, rest.packs, [TEXT]), scorer.prepare(target)).total
    return {"renderer": renderer, "scorer": scorer, "target": target, "stock": rest,
            "best_stock": float(scores.max()), "stock_scores": scores}


@pytest.fixture(scope="module")
def pca(problem):
    return PCASpace(problem["stock"], k=20)


def make(cls, space, problem, batch_size=16, seed=0, **options):
    return cls(space, problem["stock"], torch.Generator().manual_seed(seed), batch_size=batch_size, **options)


def run(strategy, problem, steps, callbacks=()):
    search = Search(strategy, problem["scorer"], problem["renderer"], problem["target"], Budget(steps=steps),
                    callbacks=list(callbacks))
    return search, search.run()


RANK_STEPS = 4  # 53 stock voices in batches of 16


def test_random_walk_is_kvoicewalk_batched(problem):
    space = FullPackSpace(problem["stock"])  # the seed walks every number of the pack
    strategy, asks = make(RandomWalk, space, problem), Asks()
    _, progress = run(strategy, problem, RANK_STEPS + 8, [asks])
    stock_x = space.from_packs(problem["stock"].packs)
    assert torch.equal(torch.cat(asks.asks[:RANK_STEPS]), stock_x)  # opening: rank the stock voices
    top = stock_x[torch.argsort(-problem["stock_scores"])[:10]]
    assert torch.allclose(asks.asks[RANK_STEPS][0], top.mean(0))  # start: mean of the top 10, scored alone
    # mutations: best + randn · std(top 10) · diversity, diversity ~ U(0.01, 0.15) per candidate
    spread = ((asks.asks[RANK_STEPS + 1] - top.mean(0)) / top.std(0)).std(dim=1)
    assert spread.min() > 0.005 and spread.max() < 0.16 and spread.std() > 0.01
    assert progress.best_score > problem["best_stock"] + 0.02


def test_interpolate_walks_the_pair_grid_then_stops(problem, pca):
    strategy, asks = make(InterpolationSearch, pca, problem, population="4"), Asks()
    search, progress = run(strategy, problem, 100, [asks])
    grid = 6 * 29  # 4 voices → 6 pairs; α = −1.5…1.5 by 0.1 without ±1 (the voices themselves)
    assert strategy.done() and progress.evals == len(problem["stock"]) + grid
    top = strategy.ranked()[0][:4]  # ranked by their scores in this space (k = 20 loses some detail)
    first = (top[0] + top[1]) / 2 + (top[0] - top[1]) * -1.5 / 2
    assert torch.allclose(asks.asks[RANK_STEPS][0], first, atol=1e-5)
    points, scores = strategy.handoff()
    assert points.shape == (4, pca.dim) and torch.all(scores[:-1] >= scores[1:])
    assert float(scores[0]) == progress.best_score > problem["best_stock"]


def test_fd_adam_batches_all_differences_and_climbs(problem):
    space = PCASpace(problem["stock"], k=8, center="median", frame=50)  # the seed's one-frame variant
    strategy, asks = make(FiniteDifferenceAdam, space, problem, lr="0.1", eps="0.01"), Asks()
    _, progress = run(strategy, problem, 12, [asks])
    first = asks.asks[0]
    assert first.shape == (9, 8) and first[0].abs().max() < 1e-3  # x = 0 is the median centroid
    assert torch.allclose(first[1:] - first[0], 0.01 * torch.eye(8), atol=1e-6)
    start = float(problem["scorer"].score(Renders(problem["renderer"], space.to_packs(first[:1]), [TEXT]),
                                          problem["scorer"].prepare(problem["target"])).total[0])
    assert progress.best_score > start + 0.05


def test_fd_adam_l2_loss_falls_back_with_a_message_and_refuses_huge_spaces(problem, pca):
    strategy = make(FiniteDifferenceAdam, pca, problem, loss="l2", optimizer="adamw")
    with pytest.warns(UserWarning, match="no target embedding"):
        run(strategy, problem, 2)
    with pytest.raises(InputError, match="--space pca"):
        make(FiniteDifferenceAdam, FullPackSpace(problem["stock"]), problem)


def test_random_walk_measures_the_early_exit_against_its_own_start(problem, stock, monkeypatch):
    # The seed scores its start voice in full and then exits early against the walk's own best. Measured
    # against the best stock voice instead, a start far below it (and every mutation of it) scores 0 and
    # the walk never moves.
    worst = problem["stock"].names[int(problem["stock_scores"].argmin())]
    staged = dict(problem, scorer=StagedProjectionScorer())
    walk = make(RandomWalk, FullPackSpace(problem["stock"]), staged, start=worst)
    run(walk, staged, RANK_STEPS + 8)
    start = float(problem["stock_scores"].min()) * 100
    assert walk.best_score > start + 1.0, "the walk must climb from its start"

    monkeypatch.setattr(RandomWalk, "restarts_reference", lambda self: False)  # the reference stays the best stock voice
    stuck_scorer = StagedProjectionScorer()
    stuck = make(RandomWalk, FullPackSpace(problem["stock"]), staged, start=worst)
    run(stuck, dict(staged, scorer=stuck_scorer), RANK_STEPS + 8)
    assert stuck.best_score == 0.0 and stuck_scorer.best == pytest.approx(problem["best_stock"], abs=1e-6)


def test_cma_es_climbs_from_the_best_stock_voice(problem, pca):
    strategy, asks = make(CMAES, pca, problem, sigma0="0.3"), Asks()
    _, progress = run(strategy, problem, RANK_STEPS + 10, [asks])
    assert asks.asks[RANK_STEPS].shape == (16, pca.dim) and not strategy.diagonal
    assert progress.best_score > problem["best_stock"] + 0.03
    assert make(CMAES, FullPackSpace(problem["stock"]), problem).diagonal  # auto: diagonal above 1,000 coordinates


def test_cma_es_moves_off_a_stock_voice_in_the_mixture_space(problem):
    # A stock voice is a vertex of the simplex: every other logit sits ~14 below it, so a step of 0.3
    # never gives them weight. The mixture defaults (start at the uniform mix, wide steps) must climb.
    from strategies.spaces import MixtureSpace

    space = MixtureSpace(problem["stock"])
    strategy = make(CMAES, space, problem)
    assert (strategy.start, strategy.sigma0) == ("mean", 2.0)
    _, progress = run(strategy, problem, 12)
    assert progress.best_score > problem["best_stock"] + 0.02
    pinned = make(CMAES, space, problem, start="best", sigma0="0.3")  # explicit options still win
    assert (pinned.start, pinned.sigma0) == ("best", 0.3)


@pytest.mark.parametrize("name", ["nevergrad:NGOpt", "nevergrad:TwoPointsDE"])
def test_nevergrad_variants_climb(problem, pca, name):
    cls = registry.get("strategies", name)
    _, progress = run(make(cls, pca, problem, budget="400"), problem, RANK_STEPS + 12)
    assert progress.best_score > problem["best_stock"] + 0.01
    with pytest.raises(InputError, match="no optimizer"):
        make(NevergradStrategy, pca, problem, variant="NoSuchOpt")


def test_gradient_climbs_inside_its_trust_region(problem, pca):
    strategy, asks = make(GradientAscent, pca, problem, batch_size=4, lr="0.2", radius="0.5"), Asks()
    _, progress = run(strategy, problem, 14 + 10, [asks])  # ranking 53 voices in batches of 4: 14 steps
    assert asks.grad_steps == 10  # no gradients while ranking
    starts = strategy.x_start
    assert torch.equal(starts, strategy.ranked()[0][:4])  # chains start from the 4 best stock voices
    for x in asks.asks[-10:]:
        assert ((x - starts) / pca.scale()).pow(2).mean(1).sqrt().max() <= 0.5 + 1e-4
    assert progress.best_score > problem["best_stock"] + 0.03


def test_gradient_answers_with_the_mean_of_its_best_chains(problem, pca, tmp_path):
    from voicesearch.run import RunRecorder, read_checkpoint
    from voicesearch.voice import load_voice

    strategy = make(GradientAscent, pca, problem, batch_size=4, lr="0.2", average="2")
    search = Search(strategy, problem["scorer"], problem["renderer"], problem["target"], Budget(steps=14 + 6),
                    callbacks=[RunRecorder(tmp_path, checkpoint_every=5)])
    progress = search.run()
    x = strategy.propose()  # the chains where they ended
    top2 = x[search.evaluate(x, grad=False)[1].total.argsort(descending=True)[:2]].mean(0, keepdim=True)
    expected = pca.to_packs(top2)[0]
    assert torch.allclose(progress.voice, expected, atol=1e-5) and not torch.allclose(progress.voice, progress.best_pack)
    assert progress.favorite_score == pytest.approx(float(search.evaluate(top2, grad=False)[1].total[0]), abs=1e-5)
    assert progress.evals == 53 + 6 * 4  # the answer is scored outside the budget
    final, best = (load_voice(tmp_path / f).reshape(510, 256) for f in ("voice_final.pt", "voice_best.pt"))
    assert torch.allclose(final, progress.voice.reshape(510, 256), atol=1e-3)
    assert torch.allclose(best, progress.best_pack.reshape(510, 256), atol=1e-3) and not torch.allclose(final, best)
    read_checkpoint(tmp_path / "checkpoint.pt")  # its progress record still passes the checkpoint's checks

    single = make(GradientAscent, pca, problem, batch_size=4, average="1")  # average 1: the best scored voice
    assert run(single, problem, 14 + 2)[1].favorite_pack is None
    ranking = make(GradientAscent, pca, problem, batch_size=4)  # budget spent while ranking: no chains yet
    assert run(ranking, problem, 5)[1].favorite_pack is None

    class StopAt(Callback):
        def on_step(self, search, x, result, improved):
            if search.progress.step == 16:
                search.request_stop()
    stopped = Search(make(GradientAscent, pca, problem, batch_size=4), problem["scorer"], problem["renderer"],
                     problem["target"], Budget(steps=14 + 6), callbacks=[StopAt()])
    with pytest.raises(KeyboardInterrupt):
        stopped.run()
    assert stopped.progress.favorite_pack is None  # a stopped search answers when resumed to its end


def test_chain_hands_the_best_points_on(problem, pca):
    strategy = make(Chain, pca, problem, variant="interpolate>cma-es>gradient", steps=",6",
                    **{"interpolate.population": "3", "3.lr": "0.2"})
    stages = []

    class Stage(Callback):
        def on_step(self, search, x, result, improved):
            stages.append((strategy.index, result.grad is not None, search.progress.best_score))

    run(strategy, problem, 30, [Stage()])
    grid_steps = -(-3 * 29 // 16)
    assert [s for s, _, _ in stages] == [0] * (RANK_STEPS + grid_steps) + [1] * 6 + [2] * (30 - RANK_STEPS - grid_steps - 6)
    assert all(grad == (stage == 2) for stage, grad, _ in stages)
    cma = strategy.stages[1]
    best_after_grid = stages[RANK_STEPS + grid_steps - 1][2]
    assert torch.equal(cma.x0, strategy.stages[0].handoff()[0][0]) and float(strategy.stages[0].handoff()[1][0]) == best_after_grid
    assert stages[-1][2] > best_after_grid > problem["best_stock"]
    with pytest.raises(InputError, match="never ends by itself"):
        make(Chain, pca, problem, variant="random-walk>cma-es")
    with pytest.raises(InputError, match="prefix it with a stage"):
        make(Chain, pca, problem, variant="interpolate>cma-es", sigma0=0.2)



def test_what_tools_ask_a_strategy_through_the_base_class(problem, pca):
    """The report's baseline and --batch auto ask `known_stock_scores()` / `may_want_grad()`, never attributes by name."""
    chain = make(Chain, pca, problem, variant="interpolate>cma-es>gradient", steps=",6")
    assert chain.may_want_grad() and not chain.wants_grad  # gradients only in its last stage, not while ranking
    assert not make(Chain, pca, problem, variant="interpolate>cma-es").may_want_grad()
    grad = make(GradientAscent, pca, problem)
    assert grad.may_want_grad() and not make(CMAES, pca, problem).may_want_grad()
    run(chain, problem, 2)  # two of the four ranking batches
    known = chain.known_stock_scores()
    assert known.shape == (len(problem["stock"]),) and int(known.isfinite().sum()) == 32
    packs = pca.to_packs(pca.from_packs(problem["stock"].packs[:32]))  # the ranking scores the stock voices' points
    expected = problem["scorer"].score(Renders(problem["renderer"], packs, [TEXT]), problem["scorer"].prepare(problem["target"]))
    torch.testing.assert_close(known[:32], expected.total, rtol=1e-4, atol=1e-4)
    assert make(RandomWalk, pca, problem).known_stock_scores() is not None  # staged: ranks first

RESUMABLE = [
    ("random-walk", {}, 2),  # stops while ranking the stock voices
    ("random-walk", {}, 6),
    ("interpolate", {"population": 3}, 6),
    ("fd-adam", {"optimizer": "adamw"}, 3),
    ("cma-es", {}, 6),
    ("nevergrad:TwoPointsDE", {"budget": 200}, 6),
    ("nevergrad:NGOpt", {"budget": 200}, 6),
    ("gradient", {}, 6),
    ("chain:interpolate>cma-es>gradient", {"steps": ",2", "interpolate.population": 3}, 11),  # stops inside cma-es
]


@pytest.mark.parametrize("name, options, stop", RESUMABLE, ids=[f"{n}@{k}" for n, _, k in RESUMABLE])
def test_resume_asks_exactly_the_same(problem, pca, tmp_path, name, options, stop):
    total = stop + 4  # ranking takes the first 4 steps (53 voices, batches of 16)
    cls = registry.get("strategies", name)
    straight = Asks()
    run(make(cls, pca, problem, batch_size=16, seed=5, **options), problem, total, [straight])

    first = Asks()
    search, _ = run(make(cls, pca, problem, batch_size=16, seed=5, **options), problem, stop, [first])
    save_checkpoint(search, tmp_path / "checkpoint.pt")  # torch.save; loaded back with weights_only=True

    resumed = Asks()
    fresh = Search(make(cls, pca, problem, batch_size=16, seed=99, **options), problem["scorer"], problem["renderer"],
                   problem["target"], Budget(steps=total), callbacks=[resumed])
    load_checkpoint(fresh, tmp_path / "checkpoint.pt")
    fresh.run()
    asks = first.asks + resumed.asks
    assert len(asks) == len(straight.asks) == total
    for a, b in zip(asks, straight.asks):
        assert torch.equal(a, b)


def test_options_arrive_as_strings_and_bad_ones_say_what_to_do(problem, pca):
    walk = make(RandomWalk, pca, problem, population="5", diversity="0.02,0.1", start="af_bella")
    assert walk.population == 5 and walk.diversity == [0.02, 0.1]
    assert make(CMAES, pca, problem, diagonal="true", stop="false").diagonal
    with pytest.raises(InputError, match="population='many' is not an integer"):
        make(RandomWalk, pca, problem, population="many")
    with pytest.raises(InputError, match="diversity"):
        make(RandomWalk, pca, problem, diversity="0.2,0.1")
    with pytest.raises(InputError, match="not one of: adam, adamw"):
        make(FiniteDifferenceAdam, pca, problem, optimizer="sgd")
    with pytest.raises(TypeError, match="unknown options"):
        make(GradientAscent, pca, problem, learning_rate=0.1)


def test_cma_es_checkpoint_from_before_the_stop_hook_resumes(problem, pca):
    """Checkpoints written before Strategy.stop() kept cma-es's `stop` option under the key "stop": still loads."""
    strategy = make(CMAES, pca, problem, stop="false")
    run(strategy, problem, RANK_STEPS + 2)
    state = strategy.state_dict()
    old = {("stop" if k == "use_stop" else k): v for k, v in state.items()}
    assert "stop" in old and "use_stop" not in old
    resumed = make(CMAES, pca, problem)
    resumed.load_state_dict(old)
    assert resumed.use_stop is False and resumed.stop() is None and not resumed.done()
    assert torch.equal(resumed.ask(), strategy.ask())
