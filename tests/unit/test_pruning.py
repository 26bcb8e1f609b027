"""Online confidence pruning (search/pruning.py) on a scripted generator whose per-token
confidence is scripted: threshold, stop rule, abort, consensus, vote and token accounting."""

import numpy as np
import pytest

from scorers.mean_logprob import MeanLogprobScorer
from search import best_of_n, parse_params, self_consistency
from search.best_of_n import BestOfNParams
from search.params import PruneSettings
from search.pruning import lowest_group_confidence
from search.self_consistency import SelfConsistencyParams
from search.types import InvalidSearchParam
from tests.unit.scripted import ScriptedGenerator, sample, search_context

ANSWER_5 = "The answer is 5."  # 16 tokens
ANSWER_7 = "The answer is 7."


def recorded(text: str, confidence) -> object:
    """`text` with each token's recorded self-certainty: one value for all, or a list."""
    values = [confidence] * len(text) if isinstance(confidence, (int, float)) else list(confidence)
    assert len(values) == len(text)
    return sample(text, confidence=values)


def engine(script: list) -> ScriptedGenerator:
    generator = ScriptedGenerator(script)
    generator.records_self_certainty = True
    return generator


def params(n: int, **prune) -> SelfConsistencyParams:
    settings = {"warmup": 2, "percentile": 50.0, "window": 3, "consensus": 1.0, **prune}
    return SelfConsistencyParams(n=n, include_greedy=False, prune=settings)


def test_lowest_group_confidence_is_the_least_window_mean_or_the_mean_of_a_short_sample():
    assert lowest_group_confidence([4, 4, 1, 4, 4], 2) == 2.5
    assert lowest_group_confidence([3, 1], 4) == 2.0
    assert lowest_group_confidence([], 4) == 0.0


@pytest.mark.asyncio
async def test_a_sample_is_stopped_at_the_first_full_window_below_the_warmup_threshold():
    # The warm-up's lowest window confidences are 4 and 2: the median, 3, is the threshold.
    shaky = [4.0] * 4 + [1.0] * 12  # windows of 3: 4, 4, 3 (not below), then 2 at token 6
    generator = engine([recorded(ANSWER_5, 4.0), recorded(ANSWER_7, 2.0),
                        recorded(ANSWER_7, shaky), recorded(ANSWER_5, 3.5)])
    ctx = search_context(generator)
    result = await self_consistency.run(ctx, params(4))

    assert result.pruning["threshold"] == 3.0
    assert generator.aborted == [(0, 6)]  # the shaky sample, aborted after its sixth token
    assert result.pruning["pruned"] == 1 and result.pruning["stopped_tokens"] == 6
    assert [len(c.sample.token_ids) for c in result.candidates] == [16, 16, 16]  # the pruned one is no candidate
    # Every generated token is paid for, the pruned sample's six included.
    assert result.usage.completion_tokens == 16 * 3 + 6
    assert ctx.generator.budget.spent_tokens == 16 * 3 + 6
    # Letting it finish would have cost the mean finished length, 16: 10 saved.
    assert result.pruning["tokens_saved_estimate"] == 10
    # Both calls asked the engine for its self-certainty record.
    assert all(spec.token_self_certainty for _, spec in generator.calls)


@pytest.mark.asyncio
async def test_the_vote_is_weighted_by_confidence_and_skips_warmup_samples_below_the_threshold():
    # Two unconfident 7s lose to one confident 5; the 2.0 warm-up sample does not vote at all.
    generator = engine([recorded(ANSWER_5, 4.0), recorded(ANSWER_7, 2.0),
                        recorded(ANSWER_7, 3.1), recorded(ANSWER_7, 3.2), recorded(ANSWER_5, 9.0)])
    result = await self_consistency.run(search_context(generator), params(5))

    assert result.chosen.answer == "5" and result.selected_index == 0
    assert result.chosen.votes == pytest.approx(13.0 / (4.0 + 3.1 + 3.2 + 9.0))
    assert result.candidates[1].votes == pytest.approx(6.3 / 19.3)  # its answer's share, not its own weight
    assert result.pruning["voters"] == 4


@pytest.mark.asyncio
async def test_a_settled_warmup_draws_no_more_samples():
    generator = engine([recorded(ANSWER_5, 4.0), recorded(ANSWER_5, 4.0)])
    result = await self_consistency.run(search_context(generator), params(8, consensus=0.95))

    assert len(generator.calls) == 1
    assert result.pruning["not_drawn"] == 6 and result.pruning["tokens_saved_estimate"] == 6 * 16
    assert result.chosen.answer == "5"


@pytest.mark.asyncio
async def test_running_samples_stop_once_the_leader_holds_the_consensus_share():
    long_text = "Let me count the apples one by one. The answer is 5."
    generator = engine([recorded(ANSWER_5, 4.0), recorded(ANSWER_7, 4.0),
                        recorded(ANSWER_5, 4.0), recorded(long_text, 4.0)])
    result = await self_consistency.run(search_context(generator), params(4, consensus=0.6))

    # When the short 5 ends (16 tokens) the vote is 5: 8 against 7: 4, two thirds; the long
    # sample is stopped at that same step.
    assert generator.aborted == [(1, 16)]
    assert result.pruning["stopped_at_consensus"] == 1 and result.pruning["pruned"] == 0
    assert result.usage.completion_tokens == 16 * 4
    assert result.chosen.answer == "5"


@pytest.mark.asyncio
async def test_without_a_recorder_confidence_comes_from_the_top_k_logprobs():
    def top(confident: bool) -> list[dict[int, float]]:
        head = -0.01 if confident else -1.0
        return [{0: head, **{i: (-20.0 if confident else -3.0) for i in range(1, 20)}}] * 16

    script = [sample(ANSWER_5, top=top(True)), sample(ANSWER_7, top=top(True)),
              sample(ANSWER_7, top=top(False))]
    generator = ScriptedGenerator(script)
    result = await self_consistency.run(search_context(generator), params(3))

    assert all(spec.logprobs == 20 for _, spec in generator.calls)
    assert result.pruning["confidence"] == "top_k"
    expected = (0.01 + 19 * 20.0) / 20  # DeepConf's C_i = -(1/k) * sum of the top-k logprobs
    assert result.pruning["threshold"] == pytest.approx(expected, abs=1e-3)
    assert generator.aborted == [(0, 3)] and result.pruning["pruned"] == 1


@pytest.mark.asyncio
async def test_best_of_n_scores_only_the_samples_pruning_kept():
    generator = engine([recorded(ANSWER_5, 4.0), recorded(ANSWER_7, 2.0), recorded(ANSWER_7, 1.0)])
    prune = {"warmup": 2, "percentile": 50.0, "window": 3}
    result = await best_of_n.run(search_context(generator, scorer=MeanLogprobScorer()),
                                 BestOfNParams(n=3, include_greedy=False, prune=prune))

    assert len(result.candidates) == 2 and all(c.score is not None for c in result.candidates)
    assert result.pruning["pruned"] == 1
    assert result.usage.completion_tokens == 16 * 2 + 3


def test_threshold_is_numpys_percentile_of_the_warmup_lows():
    # DeepConf's conf_bar: np.percentile(warm-up lowest group confidences, 90).
    lows = [1.0, 2.0, 3.0, 10.0]
    assert float(np.percentile(lows, 90)) == pytest.approx(7.9)


@pytest.mark.parametrize("prune, param", [
    ({"window": 0}, "search.prune.window"),
    ({"percentile": 101}, "search.prune.percentile"),
    ({"warmup": "four"}, "search.prune.warmup"),
    ({"consensus": 0}, "search.prune.consensus"),
    ({"windows": 8}, "search.prune.windows"),
    ("yes", "search.prune"),
    (3, "search.prune"),
])
def test_bad_prune_settings_name_the_field(prune, param):
    with pytest.raises(InvalidSearchParam) as caught:
        parse_params("self_consistency", {"prune": prune})
    assert caught.value.param == param


def test_prune_true_takes_the_defaults_and_off_is_the_default():
    assert parse_params("best_of_n", {"prune": True}).prune == PruneSettings()
    assert parse_params("self_certainty", {}).prune is None
    assert parse_params("self_consistency", {"prune": False}).prune is None
    with pytest.raises(InvalidSearchParam) as caught:
        parse_params("self_agreement", {"prune": True})
    assert caught.value.param == "search.prune"


def test_prune_and_adaptive_are_one_or_the_other():
    with pytest.raises(InvalidSearchParam) as caught:
        parse_params("self_consistency", {"prune": True, "adaptive": True})
    assert caught.value.param == "search.adaptive"


@pytest.mark.asyncio
async def test_greedys_sample_votes_even_below_the_threshold_its_warmup_set():
    # Percentile 100: the threshold is the warm-up's best, 4.0; greedy's 2.0 would get no vote.
    generator = engine([recorded(ANSWER_5, 2.0), recorded(ANSWER_7, 4.0)])
    settings = {"warmup": 2, "percentile": 100.0, "window": 3, "consensus": 1.0}
    result = await self_consistency.run(search_context(generator),
                                        SelfConsistencyParams(n=2, prune=settings, greedy_margin=0.0))

    assert result.pruning["threshold"] == 4.0 and result.pruning["voters"] == 2
    assert result.candidates[0].votes == pytest.approx(2.0 / 6.0)  # greedy's "5"
    assert result.chosen.answer == "7"  # more confident, by more than the margin


@pytest.mark.asyncio
async def test_in_batches_a_vote_settled_between_them_leaves_the_next_undrawn():
    # Warm-up 5 and 7 (threshold 4): unsettled. The first batch of two brings two more 5s; the
    # vote is then 5: 12 against 7: 4, three quarters, settled at 0.7: the last two are never drawn.
    generator = engine([recorded(ANSWER_5, 4.0), recorded(ANSWER_7, 4.0),
                        recorded(ANSWER_5, 4.0), recorded(ANSWER_5, 4.0), recorded(ANSWER_7, 4.0)])
    result = await self_consistency.run(search_context(generator), params(6, consensus=0.7, batch=2))

    assert [spec.n for _, spec in generator.calls] == [2, 2]
    assert result.pruning["not_drawn"] == 2 and result.pruning["voters"] == 4
    assert result.usage.completion_tokens == 16 * 4
    assert result.chosen.answer == "5"


@pytest.mark.asyncio
async def test_in_batches_each_sample_keeps_its_own_stop_state():
    # The shaky sample is stopped at its fifth token (window 4, 4, 1 below the threshold 4). The
    # next batch's sample has index 0 in its call too: it must not inherit that stop.
    shaky = [4.0] * 4 + [1.0] * 12
    generator = engine([recorded(ANSWER_5, 4.0), recorded(ANSWER_7, 4.0),
                        recorded(ANSWER_7, shaky), recorded(ANSWER_5, 4.0)])
    result = await self_consistency.run(search_context(generator), params(4, batch=1))

    assert result.pruning["pruned"] == 1 and len(result.candidates) == 3
    assert result.usage.completion_tokens == 16 * 3 + 5
