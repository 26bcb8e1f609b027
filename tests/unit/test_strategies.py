import math
import random

import pytest

from scorers.mean_logprob import MeanLogprobScorer
from scorers.self_certainty import SelfCertaintyScorer
from search import best_of_n, self_agreement, self_certainty, self_consistency
from search.best_of_n import BestOfNParams
from search.self_agreement import SelfAgreementParams
from search.self_certainty import SelfCertaintyParams, paper_power
from search.self_consistency import SelfConsistencyParams
from search.voting import AnswerGroup, borda_weights, is_settled
from tests.unit.scripted import FixedScorer, ScriptedGenerator, sample, search_context


def answers_script(answers: list[str]) -> list:
    return [sample(f"The answer is {a}.") for a in answers]


# best_of_n

@pytest.mark.asyncio
async def test_best_of_n_picks_the_best_score_from_one_call():
    generator = ScriptedGenerator([sample("The answer is 5.", -2.0), sample("answer: 5", -0.5),
                                   sample("The answer is 7.", -1.0)])
    ctx = search_context(generator, scorer=MeanLogprobScorer())
    result = await best_of_n.run(ctx, BestOfNParams(n=3, include_greedy=False))

    assert result.selected_index == 1
    assert len(generator.calls) == 1 and generator.calls[0][1].n == 3
    assert generator.calls[0][1].chosen_logprobs
    assert [c.score for c in result.candidates] == [-2.0, -0.5, -1.0]
    assert [c.answer for c in result.candidates] == ["5", "5", "7"]
    assert [c.votes for c in result.candidates] == pytest.approx([2 / 3, 2 / 3, 1 / 3])
    assert not result.truncated
    assert result.usage.completion_tokens == sum(len(c.sample.token_ids) for c in result.candidates)
    assert result.usage.engine_calls == 1
    children = result.tree["root"]["children"]
    assert [child["score"] for child in children] == [-2.0, -0.5, -1.0]
    assert [step["step"] for step in result.trace] == ["sample", "score", "select"]


@pytest.mark.asyncio
async def test_best_of_n_tie_goes_to_the_lowest_index():
    generator = ScriptedGenerator(answers_script(["1", "2", "3"]))
    ctx = search_context(generator, scorer=FixedScorer([0.1, 0.7, 0.7]))
    assert (await best_of_n.run(ctx, BestOfNParams(n=3))).selected_index == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("scorer, logprobs, full_vocab", [
    (FixedScorer([0.0] * 2), None, False),
    (FixedScorer([0.0] * 2, logprobs_needed=20), 20, False),
    (FixedScorer([0.0] * 2, full_vocab=True), None, True),
])
async def test_sampling_asks_for_what_the_scorer_needs(scorer, logprobs, full_vocab):
    generator = ScriptedGenerator(answers_script(["1", "2"]))
    ctx = search_context(generator, scorer=scorer, seed=11, max_tokens=40)
    await best_of_n.run(ctx, BestOfNParams(n=2, temperature=0.3, top_p=0.8, include_greedy=False))
    spec = generator.calls[0][1]
    assert (spec.logprobs, spec.full_vocab_logprobs) == (logprobs, full_vocab)
    assert (spec.temperature, spec.top_p, spec.max_tokens, spec.seed) == (0.3, 0.8, 40, 11)
    assert generator.calls[0][0] == [1, 2, 3]


@pytest.mark.asyncio
async def test_progress_is_reported_after_each_engine_round():
    reports = []
    generator = ScriptedGenerator(answers_script(["1", "1", "2"]))
    ctx = search_context(generator, scorer=MeanLogprobScorer(), progress=reports.append)
    await best_of_n.run(ctx, BestOfNParams(n=3))
    assert len(reports) == 1  # mean_logprob needs no engine call of its own
    assert reports[0]["round"] == 1 and reports[0]["candidates"] == 3
    assert reports[0]["leader"] == "1" and reports[0]["leader_votes"] == 2
    assert reports[0]["completion_tokens"] == ctx.generator.usage.completion_tokens


# self_certainty

@pytest.mark.asyncio
async def test_self_certainty_prefers_responses_with_an_answer():
    generator = ScriptedGenerator([sample("no idea at all"), sample("The answer is 4."),
                                   sample("The answer is 9.")])
    ctx = search_context(generator, scorer=FixedScorer([5.0, 1.0, 2.0], logprobs_needed=20))
    result = await self_certainty.run(ctx, SelfCertaintyParams(n=3))
    assert result.selected_index == 2


@pytest.mark.asyncio
async def test_self_certainty_with_the_real_scorer_picks_the_sharpest():
    sharp = {1: math.log(0.97), 2: math.log(0.03)}
    flat = {1: math.log(0.5), 2: math.log(0.5)}
    generator = ScriptedGenerator([sample("7", top=[flat]), sample("8", top=[sharp]),
                                   sample("9", top=[flat])])
    ctx = search_context(generator, scorer=SelfCertaintyScorer("topk"))
    result = await self_certainty.run(ctx, SelfCertaintyParams(n=3))
    assert result.selected_index == 1
    assert generator.calls[0][1].logprobs == 20
    assert result.candidates[0].score == pytest.approx(0.0)


def test_borda_weights_by_rank_with_ties_to_the_lower_index():
    assert borda_weights([0.5, 0.9, 0.1], 1.0) == [2.0, 3.0, 1.0]
    assert borda_weights([1.0, 1.0, 0.0], 1.0) == [3.0, 2.0, 1.0]
    assert borda_weights([0.3, 0.2], 2.0) == [4.0, 1.0]
    assert borda_weights([0.3, 0.2, 0.9], 0.0) == [1.0, 1.0, 1.0]
    assert paper_power(8) == 0.3 and paper_power(16) == 0.3 and paper_power(32) == 1.2


async def run_borda(answers, scores, power):
    generator = ScriptedGenerator(answers_script(answers))
    ctx = search_context(generator, scorer=FixedScorer(scores))
    params = SelfCertaintyParams(n=len(answers), borda=True, power=power)
    return await self_certainty.run(ctx, params)


@pytest.mark.asyncio
async def test_borda_can_outvote_the_majority():
    # weights by rank: "1" gets 4, "2" gets 1 + 2 = 3, "3" gets 3.
    result = await run_borda(["1", "2", "2", "3"], [0.9, 0.1, 0.2, 0.8], power=1.0)
    assert result.selected_index == 0
    assert result.candidates[0].votes == pytest.approx(0.4)
    assert result.candidates[1].votes == pytest.approx(0.3)
    majority = await run_borda(["1", "2", "2", "3"], [0.9, 0.1, 0.2, 0.8], power=0.0)
    assert majority.selected_index == 1


@pytest.mark.asyncio
async def test_borda_responses_without_an_answer_add_nothing():
    generator = ScriptedGenerator([sample("hmm"), sample("The answer is 2."),
                                   sample("The answer is 3.")])
    ctx = search_context(generator, scorer=FixedScorer([0.9, 0.5, 0.1]))
    result = await self_certainty.run(ctx, SelfCertaintyParams(n=3, borda=True, power=1.0))
    assert result.selected_index == 1
    assert [c.votes for c in result.candidates] == pytest.approx([0.0, 2 / 6, 1 / 6])


@pytest.mark.asyncio
async def test_borda_default_power_follows_the_paper():
    result = await run_borda(["1", "2"], [0.2, 0.1], power=None)
    assert next(s for s in result.trace if s["step"] == "borda")["power"] == 0.3


@pytest.mark.asyncio
@pytest.mark.parametrize("seed", range(20))
async def test_borda_with_power_zero_is_majority_vote(seed):
    rng = random.Random(seed)
    count = rng.randint(1, 12)
    answers = [rng.choice(["1", "2", "3", "4"]) for _ in range(count)]
    scores = [rng.random() for _ in range(count)]
    borda = await run_borda(answers, scores, power=0.0)
    ctx = search_context(ScriptedGenerator(answers_script(answers)))
    vote = await self_consistency.run(ctx, SelfConsistencyParams(n=count))
    assert borda.selected_index == vote.selected_index
    assert [c.votes for c in borda.candidates] == pytest.approx([c.votes for c in vote.candidates])


@pytest.mark.asyncio
@pytest.mark.parametrize("seed", range(10))
async def test_borda_with_a_huge_power_is_pure_self_certainty(seed):
    rng = random.Random(seed)
    answers = [str(i) for i in range(8)]
    scores = [rng.random() for _ in answers]
    result = await run_borda(answers, scores, power=100.0)
    assert result.selected_index == max(range(8), key=lambda i: scores[i])


# self_consistency

async def vote(answers, **params):
    generator = ScriptedGenerator(answers_script(answers))
    result = await self_consistency.run(search_context(generator),
                                        SelfConsistencyParams(n=len(answers), **params))
    return result, generator


@pytest.mark.asyncio
async def test_majority_groups_equivalent_answers():
    generator = ScriptedGenerator([sample("The answer is 999."), sample("It is 1,000"),
                                   sample("so $1000."), sample("\\boxed{1000.0}")])
    result = await self_consistency.run(search_context(generator),
                                        SelfConsistencyParams(n=4, include_greedy=False))
    assert result.selected_index == 1
    assert [c.votes for c in result.candidates] == pytest.approx([0.25, 0.75, 0.75, 0.75])
    assert result.chosen.answer == "1000"
    assert len(generator.calls) == 1
    assert not generator.calls[0][1].chosen_logprobs  # a vote reads no logprobs: vLLM skips them


@pytest.mark.asyncio
async def test_majority_tie_goes_to_the_first_seen_answer():
    result, _ = await vote(["7", "5", "5", "7"])
    assert result.selected_index == 0
    result, _ = await vote(["5", "7", "7", "5"])
    assert result.selected_index == 0


@pytest.mark.asyncio
async def test_unparseable_answers_do_not_vote():
    generator = ScriptedGenerator([sample("no idea"), sample("The answer is 7."), sample("hm")])
    result = await self_consistency.run(search_context(generator), SelfConsistencyParams(n=3))
    assert result.selected_index == 1
    assert [c.votes for c in result.candidates] == pytest.approx([0.0, 1 / 3, 0.0])
    generator = ScriptedGenerator([sample("no idea"), sample("none")])
    result = await self_consistency.run(search_context(generator), SelfConsistencyParams(n=2))
    assert result.selected_index == 0 and result.chosen.votes == 0.0


@pytest.mark.asyncio
async def test_adaptive_stops_once_the_vote_is_settled():
    full, full_generator = await vote(["5"] * 12, include_greedy=False)
    adaptive, adaptive_generator = await vote(["5"] * 12, adaptive=True, batch_size=4,
                                              include_greedy=False)
    assert len(full_generator.calls) == 1
    # After 4 votes the other 8 could still win; after 8, the last 4 could not.
    assert [spec.n for _, spec in adaptive_generator.calls] == [4, 4]
    assert adaptive.chosen.answer == full.chosen.answer
    assert adaptive.usage.completion_tokens < full.usage.completion_tokens
    assert any(step["step"] == "early_stop" for step in adaptive.trace)


def test_settled_means_no_remaining_votes_can_change_the_winner():
    def groups(*weights):
        return [AnswerGroup(str(i), [i], w) for i, w in enumerate(weights)]
    assert is_settled(groups(4), 4)  # a new answer could only tie, and lose the tie
    assert not is_settled(groups(4), 5)
    assert is_settled(groups(3, 1), 2)  # "1" could tie but "0" was seen first
    assert not is_settled(groups(1, 3), 2)  # "0" could tie and was seen first
    assert not is_settled(groups(3, 1), 3)
    assert not is_settled([], 1)


@pytest.mark.asyncio
async def test_adaptive_stops_after_one_batch_when_it_already_decides():
    result, generator = await vote(["5"] * 8, adaptive=True, batch_size=4, include_greedy=False)
    assert [spec.n for _, spec in generator.calls] == [4]
    assert result.chosen.answer == "5" and len(result.candidates) == 4


@pytest.mark.asyncio
async def test_adaptive_keeps_sampling_while_the_lead_can_change():
    answers = ["5", "6", "5", "6", "5", "6", "5", "6", "5", "6"]
    result, generator = await vote(answers, adaptive=True, batch_size=4, include_greedy=False)
    assert [spec.n for _, spec in generator.calls] == [4, 4, 2]
    assert result.selected_index == 0


@pytest.mark.asyncio
async def test_adaptive_batches_get_distinct_seeds():
    generator = ScriptedGenerator(answers_script(["1", "2"] * 4))
    ctx = search_context(generator, seed=100)
    await self_consistency.run(ctx, SelfConsistencyParams(n=8, adaptive=True, batch_size=2,
                                                          include_greedy=False))
    seeds = [spec.seed for _, spec in generator.calls]
    assert len(seeds) == 4 and len(set(seeds)) == 4


# self_agreement

def agreement_script(answers: list[str], reply: str):
    samples = answers_script(answers)

    def respond(prompt_ids, spec):
        if spec.temperature == 0.0:
            return [sample(reply)]
        return [samples.pop(0) for _ in range(spec.n)]
    return respond


async def agree(answers, reply):
    # No greedy candidate: the script tells the selection call by its temperature 0, and these
    # tests are about the verdict, not the candidates (see test_greedy_first.py for those).
    generator = ScriptedGenerator(agreement_script(answers, reply))
    ctx = search_context(generator, question="How many?")
    params = SelfAgreementParams(n=len(answers), include_greedy=False)
    return await self_agreement.run(ctx, params), generator


@pytest.mark.asyncio
async def test_self_agreement_follows_the_model_verdict():
    result, generator = await agree(["5", "7", "7"],
                                    "Answers: 5, 7, 7.\nThe majority voted answer is 5.")
    assert result.selected_index == 0  # the model's choice, though the count says 7
    assert len(generator.calls) == 2
    prompt_ids, spec = generator.calls[1]
    assert (spec.n, spec.temperature) == (1, 0.0)
    prompt = generator.decode(prompt_ids)
    assert prompt.startswith("<user>When making a majority vote on multiple corresponding")
    assert "Question: How many?" in prompt
    assert "Solution 1: The answer is 5.\n\nSolution 2: The answer is 7." in prompt
    assert 'write "The majority voted answer is" in the last line' in prompt
    assert [c.votes for c in result.candidates] == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    assert result.usage.engine_calls == 2


@pytest.mark.asyncio
async def test_self_agreement_maps_the_verdict_by_equivalence():
    result, _ = await agree(["5", "1,000", "1000"], "The majority voted answer is $1000$")
    assert result.selected_index == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("reply", ["I cannot decide.", "The majority voted answer is 9."])
async def test_self_agreement_falls_back_to_the_vote(reply):
    result, _ = await agree(["5", "7", "7"], reply)
    assert result.selected_index == 1


@pytest.mark.asyncio
async def test_self_agreement_skips_the_call_when_the_answers_agree():
    result, generator = await agree(["7", "7.0", "7"], "unused")
    assert len(generator.calls) == 1
    assert result.selected_index == 0


@pytest.mark.asyncio
async def test_self_agreement_shows_long_solutions_by_their_endings_to_fit_the_context():
    rambles = [sample("Let me think. " * 40 + f"The answer is {a}.") for a in ("5", "7", "7")]
    replies = iter([rambles, [sample("The majority voted answer is 5.")]])
    generator = ScriptedGenerator(lambda prompt_ids, spec: next(replies), max_model_len=1500)
    ctx = search_context(generator, question="How many?", max_tokens=1000)
    params = SelfAgreementParams(n=3, include_greedy=False, selection_max_tokens=256)
    result = await self_agreement.run(ctx, params)
    prompt_ids, _ = generator.calls[1]
    assert len(prompt_ids) <= 1500 - 256
    prompt = generator.decode(prompt_ids)
    assert all(f"The answer is {a}." in prompt for a in ("5", "7"))
    assert "Solution 3: ..." in prompt and prompt.count("Let me think.") < 3 * 40
    assert result.selected_index == 0
