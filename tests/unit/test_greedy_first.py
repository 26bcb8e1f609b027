"""`include_greedy`: the first draw of a search sends one greedy sample (candidate 0) beside
n-1 normal samples, so first-seen tie-breaks fall to the greedy answer (AlphaLLM)."""

import pytest

from scorers.mean_logprob import MeanLogprobScorer
from search import STRATEGIES, best_of_n, parse_params, self_agreement, self_consistency
from search.best_of_n import BestOfNParams
from search.params import CommonParams
from search.self_agreement import SelfAgreementParams
from search.self_consistency import SelfConsistencyParams
from search.types import InvalidSearchParam
from tests.unit.scripted import OverlapCounter, ScriptedGenerator, sample, search_context

GREEDY_TEXT = "Greedy: the answer is 1."


def greedy_and_sampled(sampled: list[str], greedy: str = "1"):
    """A script answering a temperature-0 request with `greedy` and a sampled one with the
    next of `sampled`, in order; it fails if asked for more than it has."""
    left = list(sampled)

    def respond(prompt_ids, spec):
        if spec.temperature == 0.0:
            return [sample(f"Greedy: the answer is {greedy}.")] * spec.n
        if len(left) < spec.n:
            raise AssertionError(f"script exhausted: {spec.n} asked, {len(left)} left")
        return [sample(f"Sampled: the answer is {left.pop(0)}.") for _ in range(spec.n)]
    return respond


def shape(generator) -> list[tuple[int, float]]:
    return [(spec.n, spec.temperature) for _, spec in generator.calls]


async def consistency(sampled: list[str], greedy: str = "1", seed: int | None = None, **params):
    generator = ScriptedGenerator(greedy_and_sampled(sampled, greedy))
    ctx = search_context(generator, seed=seed)
    result = await self_consistency.run(ctx, SelfConsistencyParams(**params))
    return result, generator


# (a) the first round: a greedy request and an (n-1)-sample request, issued together

@pytest.mark.asyncio
async def test_first_round_sends_a_greedy_request_beside_the_samples():
    generator = OverlapCounter(greedy_and_sampled(["2", "3", "4"]))
    reports = []
    ctx = search_context(generator, scorer=MeanLogprobScorer(), seed=7, max_tokens=40,
                         stop=("\n",), progress=reports.append)
    result = await best_of_n.run(ctx, BestOfNParams(n=4, temperature=0.5, top_p=0.9))

    assert len(generator.calls) == 2
    (greedy_ids, greedy), (sampled_ids, sampled) = generator.calls
    assert greedy_ids == sampled_ids == [1, 2, 3]
    assert (greedy.n, greedy.temperature, greedy.top_p, greedy.seed) == (1, 0.0, 1.0, None)
    assert (sampled.n, sampled.temperature, sampled.top_p, sampled.seed) == (3, 0.5, 0.9, 7)
    # Everything else is the one spec the round would have used.
    for spec in (greedy, sampled):
        assert (spec.max_tokens, spec.stop) == (40, ("\n",))
    assert generator.most_in_flight == 2  # sent together, not one after the other

    assert [c.sample.text for c in result.candidates][0] == GREEDY_TEXT
    assert [c.answer for c in result.candidates] == ["1", "2", "3", "4"]
    assert result.usage.engine_calls == 2
    # One round of drawing: one trace step and one progress report hold all four.
    draws = [step for step in result.trace if step["step"] == "sample"]
    assert len(draws) == 1 and draws[0]["first_index"] == 0
    assert draws[0]["answers"] == ["1", "2", "3", "4"]
    assert len(reports) == 1 and reports[0]["candidates"] == 4


@pytest.mark.asyncio
async def test_the_greedy_request_keeps_what_the_scorer_needs():
    class NeedsLogprobs:
        name = "needs"
        chosen_logprobs = True
        logprobs_needed = 20
        full_vocab = True
        token_self_certainty = True

        async def score(self, context, candidates):
            return [0.0] * len(candidates)

    generator = ScriptedGenerator(greedy_and_sampled(["2"]))
    ctx = search_context(generator, scorer=NeedsLogprobs())
    await best_of_n.run(ctx, BestOfNParams(n=2))
    assert shape(generator) == [(1, 0.0), (1, 0.3)]
    assert all((spec.chosen_logprobs, spec.logprobs, spec.full_vocab_logprobs, spec.token_self_certainty)
               == (True, 20, True, True) for _, spec in generator.calls)


@pytest.mark.asyncio
async def test_self_agreement_shows_the_greedy_solution_first():
    def respond(prompt_ids, spec):
        if generator.decode(prompt_ids).startswith("<user>When making a majority vote"):
            return [sample("The majority voted answer is 2.")]
        return greedy_and_sampled(["2", "3"])(prompt_ids, spec)

    generator = ScriptedGenerator(respond)
    ctx = search_context(generator, question="How many?")
    result = await self_agreement.run(ctx, SelfAgreementParams(n=3))
    assert shape(generator) == [(1, 0.0), (2, 0.3), (1, 0.0)]
    assert "Solution 1: " + GREEDY_TEXT in generator.decode(generator.calls[2][0])
    # The model named "2", but it has one vote as greedy's "1" has: the answer stays greedy's.
    assert result.greedy.proposed_index == 1 and result.greedy.proposed_answer == "2"
    assert result.selected_index == 0 and result.greedy.answer_is_greedy


# (b) and (c): the tie-break falls to the greedy answer, a real majority still wins

@pytest.mark.asyncio
async def test_when_every_answer_has_one_vote_the_greedy_one_wins():
    result, generator = await consistency(["2", "3", "4"], n=4)
    assert shape(generator) == [(1, 0.0), (3, 0.3)]
    assert result.selected_index == 0
    assert result.chosen.sample.text == GREEDY_TEXT and result.chosen.answer == "1"
    assert [c.votes for c in result.candidates] == pytest.approx([0.25] * 4)


@pytest.mark.asyncio
async def test_a_tie_between_two_answers_falls_to_the_greedy_one():
    result, _ = await consistency(["2", "2", "1"], n=4)
    assert result.selected_index == 0 and result.chosen.answer == "1"


@pytest.mark.asyncio
async def test_a_majority_of_two_beats_the_greedy_answer():
    result, _ = await consistency(["2", "2", "3"], n=4)
    assert result.selected_index == 1
    assert result.chosen.answer == "2"
    assert result.candidates[0].answer == "1"
    assert [c.votes for c in result.candidates] == pytest.approx([0.25, 0.5, 0.5, 0.25])


@pytest.mark.asyncio
async def test_a_greedy_sample_without_an_answer_wins_nothing():
    sampled = greedy_and_sampled(["2", "3", "4"])

    def respond(prompt_ids, spec):
        return [sample("no idea")] if spec.temperature == 0.0 else sampled(prompt_ids, spec)

    generator = ScriptedGenerator(respond)
    result = await self_consistency.run(search_context(generator), SelfConsistencyParams(n=4))
    assert result.candidates[0].sample.text == "no idea"
    assert result.candidates[0].answer is None and result.candidates[0].votes == 0.0
    # With no vote of its own, the greedy sample leaves the tie to the first sampled answer.
    assert result.selected_index == 1 and result.chosen.answer == "2"


# (d) adaptive self-consistency: the greedy sample is in the first batch only

@pytest.mark.asyncio
async def test_adaptive_draws_the_greedy_sample_in_the_first_batch_only():
    # Votes stay level batch after batch, so the vote never settles early.
    result, generator = await consistency(["6", "1", "6", "6", "1", "6", "1", "6", "1"],
                                          seed=100, n=10, adaptive=True, batch_size=4)
    assert shape(generator) == [(1, 0.0), (3, 0.3), (4, 0.3), (2, 0.3)]
    assert len(result.candidates) == 10
    assert sum(spec.temperature == 0.0 for _, spec in generator.calls) == 1
    assert result.candidates[0].sample.text == GREEDY_TEXT
    assert not any(c.sample.text == GREEDY_TEXT for c in result.candidates[1:])
    # Five votes each: the tie goes to the greedy answer, seen first.
    assert result.selected_index == 0
    seeds = [spec.seed for _, spec in generator.calls]
    assert seeds[0] is None and len(set(seeds[1:])) == 3 and None not in seeds[1:]


@pytest.mark.asyncio
async def test_adaptive_counts_the_greedy_sample_toward_the_settled_vote():
    result, generator = await consistency(["1"] * 7, n=8, adaptive=True, batch_size=4)
    # Greedy + 3 samples agree: the 4 votes left cannot change the winner.
    assert shape(generator) == [(1, 0.0), (3, 0.3)]
    assert len(result.candidates) == 4
    assert any(step["step"] == "early_stop" and step["skipped"] == 4 for step in result.trace)


@pytest.mark.asyncio
async def test_the_full_vote_draws_exactly_n_candidates():
    result, generator = await consistency(["2", "3", "4", "5", "6"], n=6)
    assert shape(generator) == [(1, 0.0), (5, 0.3)]
    assert len(result.candidates) == 6


# (e) and (f): when the call is not split

@pytest.mark.asyncio
async def test_without_include_greedy_one_request_is_sent():
    result, generator = await consistency(["2", "3", "4", "5"], n=4, include_greedy=False)
    assert shape(generator) == [(4, 0.3)]
    assert GREEDY_TEXT not in [c.sample.text for c in result.candidates]
    assert result.selected_index == 0 and result.chosen.answer == "2"

    generator = ScriptedGenerator(greedy_and_sampled(["2", "3", "4"]))
    ctx = search_context(generator, scorer=MeanLogprobScorer())
    await best_of_n.run(ctx, BestOfNParams(n=3, include_greedy=False))
    assert shape(generator) == [(3, 0.3)]


@pytest.mark.asyncio
async def test_temperature_zero_never_splits_the_call():
    result, generator = await consistency([], n=4, temperature=0.0)
    assert shape(generator) == [(4, 0.0)]
    assert len(result.candidates) == 4


@pytest.mark.asyncio
@pytest.mark.parametrize("params", [
    {"n": 1},
    {"n": 1, "temperature": 1.2},
    {"n": 6, "adaptive": True, "batch_size": 1},  # every draw asks for one sample
])
async def test_a_draw_of_one_sample_never_splits_the_call(params):
    result, generator = await consistency(["2"] * 6, **params)
    temperature = params.get("temperature", 0.3)
    assert all(spec.n == 1 and spec.temperature == temperature for _, spec in generator.calls)
    assert len(result.candidates) == len(generator.calls) >= 1


# (g) the parameter itself

@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("value", [1, 0, "true", "false", None, 1.0])
def test_include_greedy_must_be_a_bool(name, value):
    with pytest.raises(InvalidSearchParam) as caught:
        parse_params(name, {"include_greedy": value})
    assert caught.value.param == "search.include_greedy"
    assert "search.include_greedy" in str(caught.value)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_include_greedy_defaults_to_true_and_takes_either_bool(name):
    assert parse_params(name, {}).include_greedy is True
    assert parse_params(name, {"include_greedy": False}).include_greedy is False
    assert parse_params(name, {"include_greedy": True}).include_greedy is True


def test_common_params_check_include_greedy_directly():
    assert CommonParams().include_greedy is True
    with pytest.raises(InvalidSearchParam) as caught:
        CommonParams(include_greedy="yes")
    assert caught.value.param == "search.include_greedy"
