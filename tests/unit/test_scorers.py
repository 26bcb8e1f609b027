import asyncio
import math

import pytest

from scorers import SCORERS
from scorers.mean_logprob import EMPTY_RESPONSE_SCORE, MeanLogprobScorer
from scorers.p_true import PTrueScorer, join_turn, p_true
from search.types import Budget, MeteredGenerator, Sample, ScoringContext
from tests.unit.scripted import ScriptedGenerator, sample

A, B = ord("A"), ord("B")


def test_p_true_normalizes_over_the_two_answers():
    assert p_true({A: math.log(0.6), B: math.log(0.2), 7: math.log(0.2)}, A, B) == pytest.approx(0.75)
    assert p_true({A: math.log(0.01)}, A, B) == 1.0
    assert p_true({B: math.log(0.01)}, A, B) == 0.0
    assert p_true({7: -0.1}, A, B) == 0.5
    assert p_true({A: -800.0, B: -801.0}, A, B) == pytest.approx(1 / (1 + math.exp(-1)))


class ConcurrentJudge(ScriptedGenerator):
    """Answers "A" for proposals containing "right"; tracks how many calls overlap."""

    def __init__(self):
        super().__init__(self.judge)
        self.in_flight = 0
        self.most_in_flight = 0

    def judge(self, prompt_ids, spec):
        sure = "right" in self.decode(prompt_ids)
        top = {A: math.log(0.8 if sure else 0.1), B: math.log(0.2 if sure else 0.6)}
        return [Sample([A], "A", [top[A]], [top], "length")]

    async def generate(self, prompt_ids, spec):
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0)
        try:
            return await super().generate(prompt_ids, spec)
        finally:
            self.in_flight -= 1


@pytest.mark.asyncio
async def test_p_true_scores_all_candidates_in_concurrent_one_token_calls():
    judge = ConcurrentJudge()
    metered = MeteredGenerator(judge, Budget(max_tokens=100))
    context = ScoringContext([1, 2], "What is 2 + 3?", metered)
    scores = await PTrueScorer(follow_up=True).score(context, [sample("right: 5"), sample("wrong: 6"),
                                                               sample("right again")])
    assert scores == pytest.approx([0.8, 1 / 7, 0.8])
    assert judge.most_in_flight == 3
    assert metered.usage.engine_calls == 3 and metered.usage.completion_tokens == 3
    # Asked in a follow-up turn of the conversation the answer was generated in, in token ids.
    follow_up = "\n<user>Is the proposed answer:\n (A) True\n (B) False\n<assistant>The proposed answer is: ("
    assert [prompt_ids for prompt_ids, _ in judge.calls] == [
        [1, 2, *map(ord, answer + follow_up)] for answer in ("right: 5", "wrong: 6", "right again")]
    assert all((spec.max_tokens, spec.logprobs, spec.n) == (1, 20, 1) for _, spec in judge.calls)


class CountingTemplate(ConcurrentJudge):
    def __init__(self):
        super().__init__()
        self.renders = 0

    def chat_prompt_ids(self, messages, add_generation_prompt=True):
        self.renders += 1
        return super().chat_prompt_ids(messages, add_generation_prompt)


@pytest.mark.asyncio
async def test_the_follow_up_turn_is_worked_out_once_per_scorer():
    judge = CountingTemplate()
    scorer, context = PTrueScorer(follow_up=True), ScoringContext([1, 2], "q", MeteredGenerator(judge))
    first = await scorer.score(context, [sample("right: 5")])
    second = await scorer.score(context, [sample("right: 5"), sample("wrong: 6")])
    assert first == second[:1] and judge.renders == 2  # the template probe, on the first call only


def test_the_follow_up_turn_does_not_repeat_an_end_of_turn_the_answer_carries():
    assert join_turn([5, 6, 7], [7, 8]) == [5, 6, 7, 8]
    assert join_turn([5, 6, 7], [6, 7, 8]) == [5, 6, 7, 8]
    assert join_turn([5, 6], [7, 8]) == [5, 6, 7, 8]
    assert join_turn([], [7, 8]) == [7, 8]


class RewritingTemplate(ConcurrentJudge):
    """A chat template that drops earlier assistant turns, as some reasoning models' do."""

    def chat_prompt_ids(self, messages, add_generation_prompt=True):
        kept = [m for m in messages if m["role"] != "assistant"]
        return super().chat_prompt_ids(kept, add_generation_prompt)


@pytest.mark.asyncio
@pytest.mark.parametrize("judge, follow_up", [(ConcurrentJudge(), False), (RewritingTemplate(), True)])
async def test_p_true_falls_back_to_the_papers_single_prompt(judge, follow_up):
    context = ScoringContext([1, 2], "What is 2 + 3?", MeteredGenerator(judge))
    scores = await PTrueScorer(follow_up=follow_up).score(context, [sample("right: 5"), sample("wrong: 6")])
    assert scores == pytest.approx([0.8, 1 / 7])
    assert [judge.decode(prompt_ids) for prompt_ids, _ in judge.calls] == [
        f"<user>Question: What is 2 + 3?\nProposed Answer: {answer}\nIs the proposed answer:\n (A) True\n"
        " (B) False\n<assistant>The proposed answer is: (" for answer in ("right: 5", "wrong: 6")]


@pytest.mark.asyncio
async def test_mean_logprob():
    context = ScoringContext([1], "q", ScriptedGenerator([]))
    uneven = Sample([1, 2], "ab", [-1.0, -3.0])
    scores = await MeanLogprobScorer().score(context, [uneven, sample(""), sample("abc", -0.5)])
    assert scores == [-2.0, EMPTY_RESPONSE_SCORE, -0.5]
    with pytest.raises(ValueError):
        await MeanLogprobScorer().score(context, [Sample([1, 2], "ab", [])])


def test_registry_builds_scorers_that_declare_their_needs():
    for name, factory in SCORERS.items():
        scorer = factory()
        assert scorer.name == name
        assert isinstance(scorer.full_vocab, bool)
        assert scorer.chosen_logprobs == (name == "mean_logprob")  # only it reads Sample.logprobs
        assert scorer.logprobs_needed is None or scorer.logprobs_needed > 0
