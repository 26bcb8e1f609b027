import asyncio
import math

import pytest

from scorers import SCORERS
from scorers.mean_logprob import EMPTY_RESPONSE_SCORE, MeanLogprobScorer
from scorers.p_true import PTrueScorer, p_true
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
    scores = await PTrueScorer().score(context, [sample("right: 5"), sample("wrong: 6"),
                                                 sample("right again")])
    assert scores == pytest.approx([0.8, 1 / 7, 0.8])
    assert judge.most_in_flight == 3
    assert metered.usage.engine_calls == 3 and metered.usage.completion_tokens == 3
    for prompt_ids, spec in judge.calls:
        assert (spec.max_tokens, spec.logprobs, spec.n) == (1, 20, 1)
        prompt = judge.decode(prompt_ids)
        assert "Question: What is 2 + 3?\nProposed Answer: " in prompt
        assert " (A) True\n (B) False" in prompt
        assert prompt.endswith("<assistant>The proposed answer is: (")


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
