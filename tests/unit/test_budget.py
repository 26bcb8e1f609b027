import asyncio
import time

import pytest

from scorers.mean_logprob import MeanLogprobScorer
from scorers.p_true import PTrueScorer
from search import STRATEGIES, best_of_n, self_agreement, self_consistency
from search.best_of_n import BestOfNParams
from search.self_agreement import SelfAgreementParams
from search.self_consistency import SelfConsistencyParams
from search.types import Budget, BudgetExhausted, MeteredGenerator, SamplingSpec
from tests.unit.scripted import ScriptedCritic, ScriptedGenerator, SecondCallHangs, sample, search_context

TEN_TOKENS = "abcdefghij"


def long_samples(count: int) -> list:
    return [sample(f"{TEN_TOKENS}{i}") for i in range(count)]


@pytest.mark.asyncio
async def test_budget_shortens_the_call_and_marks_the_result_truncated():
    generator = ScriptedGenerator(long_samples(4))
    ctx = search_context(generator, scorer=MeanLogprobScorer(), budget_tokens=10, max_tokens=64)
    result = await best_of_n.run(ctx, BestOfNParams(n=4))
    assert generator.calls[0][1].max_tokens == 2
    assert result.truncated
    assert len(result.candidates) == 4
    assert result.usage.completion_tokens <= 10


def assert_empty_and_truncated(result):
    assert result.truncated
    assert result.chosen.sample.text == "" and result.candidates == []
    assert result.selected_index == -1
    assert result.usage.completion_tokens == 0 and result.usage.engine_calls == 0


# The step searches spend whatever is left on a greedy answer (see test_step_searches.py).
@pytest.mark.asyncio
@pytest.mark.parametrize("name", sorted(set(STRATEGIES) - {"mcts", "critic"}))
async def test_nothing_affordable_returns_an_empty_truncated_candidate(name):
    strategy = STRATEGIES[name]
    ctx = search_context(ScriptedGenerator([]), scorer=MeanLogprobScorer(), budget_tokens=3)
    assert_empty_and_truncated(await strategy.run(ctx, strategy.params(n=4)))


@pytest.mark.asyncio
@pytest.mark.parametrize("name", sorted(STRATEGIES))
async def test_a_passed_deadline_returns_an_empty_truncated_candidate(name):
    strategy = STRATEGIES[name]
    ctx = search_context(ScriptedGenerator([]), scorer=MeanLogprobScorer(), critic=ScriptedCritic({}),
                         deadline=time.monotonic() - 1)
    assert_empty_and_truncated(await strategy.run(ctx, strategy.params()))


@pytest.mark.asyncio
async def test_a_passed_deadline_stops_before_any_call():
    generator = ScriptedGenerator(long_samples(2))
    ctx = search_context(generator, deadline=time.monotonic() - 1)
    result = await self_consistency.run(ctx, SelfConsistencyParams(n=2))
    assert result.truncated and generator.calls == []


@pytest.mark.asyncio
async def test_adaptive_vote_returns_what_it_drew_before_the_budget_ran_out():
    generator = ScriptedGenerator([sample("1"), sample("2"), sample("2"), sample("3")] * 3)
    ctx = search_context(generator, budget_tokens=6, max_tokens=5)
    result = await self_consistency.run(ctx, SelfConsistencyParams(n=12, adaptive=True))
    assert result.truncated
    assert len(result.candidates) == 4
    assert result.chosen.answer == "2"
    assert result.usage.completion_tokens <= 6
    assert result.trace[-2]["step"] == "truncated"


@pytest.mark.asyncio
async def test_unaffordable_scoring_falls_back_to_the_vote():
    def respond(prompt_ids, spec):
        if spec.max_tokens == 1:
            raise AssertionError("scoring should not have been sent")
        return [sample("The answer is 3."), sample("The answer is 4."),
                sample("The answer is 4.")][: spec.n]
    ctx = search_context(ScriptedGenerator(respond), scorer=PTrueScorer(), budget_tokens=48)
    result = await best_of_n.run(ctx, BestOfNParams(n=3, include_greedy=False))
    assert result.truncated
    assert result.selected_index == 1
    assert all(c.score is None for c in result.candidates)
    assert result.usage.completion_tokens == 48


@pytest.mark.asyncio
async def test_unaffordable_selection_call_falls_back_to_the_vote():
    def respond(prompt_ids, spec):
        return [sample("The answer is 3."), sample("The answer is 4."),
                sample("The answer is 4.")][: spec.n]
    ctx = search_context(ScriptedGenerator(respond), budget_tokens=48)
    result = await self_agreement.run(ctx, SelfAgreementParams(n=3, include_greedy=False))
    assert result.truncated and result.selected_index == 1
    assert result.usage.engine_calls == 1


@pytest.mark.asyncio
async def test_concurrent_calls_never_overrun_the_budget_together():
    generator = ScriptedGenerator(lambda ids, spec: [sample(TEN_TOKENS)] * spec.n)
    metered = MeteredGenerator(generator, Budget(max_tokens=25))
    replies = await metered.generate_many([([1], SamplingSpec(max_tokens=10))] * 4)
    assert [len(r[0].token_ids) for r in replies] == [6, 6, 6, 6]
    assert metered.usage.completion_tokens == 24 <= 25
    assert metered.budget_limited
    with pytest.raises(BudgetExhausted):
        await metered.generate_many([([1], SamplingSpec(max_tokens=1))] * 2)
    assert metered.usage.engine_calls == 4


@pytest.mark.asyncio
async def test_reservations_are_released_when_a_call_fails():
    async def failing(ids, spec):
        await asyncio.sleep(0)
        raise RuntimeError("engine died")

    generator = ScriptedGenerator([])
    generator.generate = failing
    metered = MeteredGenerator(generator, Budget(max_tokens=100))
    with pytest.raises(RuntimeError):
        await metered.generate([1], SamplingSpec(n=2, max_tokens=10))
    assert metered.budget.reserved_tokens == 0 and metered.budget.remaining() == 100


@pytest.mark.asyncio
async def test_a_call_running_at_the_deadline_is_cancelled_and_the_search_answers_with_what_it_has():
    """Adaptive self-consistency: the first batch comes back at once, the second hangs past the
    deadline; the hanging call is cancelled (the engine's requests aborted) and the vote stands."""
    generator = SecondCallHangs()
    ctx = search_context(generator, deadline=time.monotonic() + 0.3)
    result = await self_consistency.run(ctx, SelfConsistencyParams(n=6, adaptive=True, batch_size=2,
                                                                   include_greedy=False))
    assert generator.cancelled.is_set()
    assert result.truncated and result.chosen.answer == "7" and len(result.candidates) == 2
    assert [step["reason"] for step in result.trace if step["step"] == "truncated"] == ["deadline reached"]


@pytest.mark.asyncio
async def test_a_deadline_brought_forward_cuts_the_call_in_flight_with_its_reason():
    """A server shutting down moves every running search's deadline to now: a call already
    waiting (with no deadline of its own) is cancelled, and the search answers with what it has."""
    generator = SecondCallHangs()
    ctx = search_context(generator)
    budget = ctx.generator.budget
    search = asyncio.ensure_future(self_consistency.run(ctx, SelfConsistencyParams(
        n=6, adaptive=True, batch_size=2, include_greedy=False)))
    while generator.answered:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert not search.done()
    budget.stop_at(time.monotonic(), "server shutting down")
    result = await asyncio.wait_for(search, 5)
    assert generator.cancelled.is_set()
    assert result.truncated and result.chosen.answer == "7" and len(result.candidates) == 2
    assert [step["reason"] for step in result.trace if step["step"] == "truncated"] == ["server shutting down"]


def test_stop_at_never_moves_a_deadline_later():
    budget = Budget(deadline=time.monotonic() + 1)
    earlier = budget.deadline
    budget.stop_at(earlier + 10, "server shutting down")
    assert budget.deadline == earlier and budget.deadline_reason == "deadline reached"
