import math

import numpy as np
import pytest

from scorers.self_certainty import SelfCertaintyScorer, tail_completion, token_self_certainty
from search.types import ScoringContext
from tests.unit.scripted import ScriptedGenerator, sample


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    return shifted - math.log(np.exp(shifted).sum())


def random_logits(size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 3.0, size)


def test_uniform_distribution_scores_zero():
    assert token_self_certainty(np.full(500, -math.log(500))) == pytest.approx(0.0, abs=1e-12)
    assert token_self_certainty(np.full(500, 7.0)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_formula_equals_direct_kl_and_repo_form(seed):
    logits = random_logits(1000, seed)
    logprobs = log_softmax(logits)
    vocab = len(logits)
    probs = np.exp(logprobs)
    direct_kl = float(np.sum((1 / vocab) * np.log((1 / vocab) / probs)))
    repo_form = float(-logprobs.sum() / vocab - math.log(vocab))
    assert token_self_certainty(logits) == pytest.approx(direct_kl, rel=1e-9)
    assert token_self_certainty(logprobs) == pytest.approx(direct_kl, rel=1e-9)
    assert repo_form == pytest.approx(direct_kl, rel=1e-9)
    assert direct_kl > 0


def position(logprobs: np.ndarray) -> dict[int, float]:
    return {token: float(lp) for token, lp in enumerate(logprobs)}


def test_estimators_on_one_distribution():
    logprobs = log_softmax(random_logits(1000, 7))
    exact = token_self_certainty(logprobs)
    full = position(logprobs)
    top = np.sort(logprobs)[::-1][:20]
    top_only = {i: full[i] for i in sorted(full, key=full.get, reverse=True)[:20]}

    assert SelfCertaintyScorer("exact").token_score(full, 1000) == pytest.approx(exact)
    # Over the whole vocabulary the top-k estimate is the exact score.
    assert SelfCertaintyScorer("topk", top_k=1000).token_score(full, 1000) == pytest.approx(exact)
    assert SelfCertaintyScorer("topk").token_score(top_only, 1000) == pytest.approx(
        token_self_certainty(top))
    assert SelfCertaintyScorer("deepconf").token_score(top_only, 1000) == pytest.approx(-top.mean())
    tail = SelfCertaintyScorer("tail").token_score(top_only, 1000)
    assert tail == pytest.approx(tail_completion(top, 1000))
    assert 0 <= tail <= exact  # a lower bound, by Jensen


def test_tail_completion_is_exact_when_the_tail_really_is_uniform():
    vocab, head = 50, np.log([0.5, 0.2, 0.1])
    rest = math.log(0.2 / (vocab - 3))
    full = np.concatenate([head, np.full(vocab - 3, rest)])
    assert tail_completion(head, vocab) == pytest.approx(token_self_certainty(full))


def test_only_the_top_k_entries_count():
    # The engine may return the sampled token as an extra, lower-ranked entry.
    scorer = SelfCertaintyScorer("deepconf", top_k=2)
    assert scorer.token_score({1: -0.1, 2: -3.0, 3: -9.0}, 1000) == pytest.approx(1.55)


@pytest.mark.asyncio
async def test_response_score_is_the_plain_mean_over_tokens():
    generator = ScriptedGenerator([])
    context = ScoringContext([1], "q", generator)
    sharp = {1: math.log(0.9), 2: math.log(0.1)}
    flat = {1: math.log(0.5), 2: math.log(0.5)}
    scorer = SelfCertaintyScorer("topk")
    scores = await scorer.score(context, [
        sample("ab", top=[sharp, flat]), sample("a", top=[sharp]), sample("", top=[])])
    assert scores[0] == pytest.approx(token_self_certainty(np.log([0.9, 0.1])) / 2)
    assert scores[1] == pytest.approx(token_self_certainty(np.log([0.9, 0.1])))
    assert scores[2] == 0.0
    with pytest.raises(ValueError):
        await scorer.score(context, [sample("ab")])


def test_what_each_mode_asks_the_engine_for():
    assert SelfCertaintyScorer("exact").full_vocab
    assert SelfCertaintyScorer("exact").logprobs_needed is None
    assert SelfCertaintyScorer("tail", top_k=5).logprobs_needed == 5
    assert not SelfCertaintyScorer("topk").full_vocab
    with pytest.raises(ValueError):
        SelfCertaintyScorer("entropy")
