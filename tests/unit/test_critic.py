import math

import pytest

from scorers.step_critic import SYSTEM_PROMPT, PromptedStepCritic
from search import critic
from search.critic import CriticParams
from search.types import Budget, MeteredGenerator, Sample, ScoringContext, StepToJudge
from tests.unit.scripted import ScriptedCritic, ScriptedGenerator, by_prompt_suffix, search_context

BEAMS = {
    "": ["a1\n\n", "a2\n\n"],
    "a1\n\n": ["b1\n\n", "b2\n\n"],
    "a2\n\n": ["b3\n\n", "b4\n\n"],
    "b1\n\n": ["The answer is 5."],
    "b3\n\n": ["The answer is 6."],
}
STEP_SCORES = {"a1": 0.9, "a2": 0.6, "b1": 0.9, "b2": 0.55, "b3": 0.95, "b4": 0.7}


@pytest.mark.asyncio
async def test_the_beam_keeps_the_best_cumulative_scores_not_the_best_last_step():
    generator = ScriptedGenerator(by_prompt_suffix(BEAMS))
    judge = ScriptedCritic(STEP_SCORES)
    ctx = search_context(generator, critic=judge)
    result = await critic.run(ctx, CriticParams(beam_width=2, k=2, max_revisions=0, include_greedy=False))

    # Products after two steps: a1 b1 0.81, a2 b3 0.57, a1 b2 0.495, a2 b4 0.42.
    beams = [step["open"] for step in result.trace if step["step"] == "beams"]
    assert beams[:2] == [["0", "1"], ["0.0", "1.0"]]
    assert result.chosen.sample.text == "a1\n\nb1\n\nThe answer is 5."
    assert [c.sample.text for c in result.candidates] == ["a1\n\nb1\n\nThe answer is 5.",
                                                          "a2\n\nb3\n\nThe answer is 6."]
    assert [c.score for c in result.candidates] == pytest.approx([0.9 * 0.9 * 0.9, 0.6 * 0.95 * 0.9])
    # The pruned beams (a1 b2, a2 b4) are never continued; the critic sees each step's batch.
    paths = [generator.decode(prompt[3:]) for prompt, _ in generator.calls]
    assert paths == ["", "a1\n\n", "a2\n\n", "a1\n\nb1\n\n", "a2\n\nb3\n\n"]
    assert [len(batch) for batch in judge.judged] == [2, 4, 2]
    assert judge.judged[1][0] == StepToJudge("a1\n\n", "b1\n\n")
    assert judge.critiqued == [] and not result.truncated


@pytest.mark.asyncio
async def test_a_finished_beam_that_outranks_every_open_one_ends_the_search():
    generator = ScriptedGenerator(by_prompt_suffix({"": ["The answer is 5.", "Think.\n\n"]}))
    ctx = search_context(generator, critic=ScriptedCritic({"The answer is 5.": 0.9, "Think.": 0.6}))
    result = await critic.run(ctx, CriticParams(include_greedy=False))
    assert len(generator.calls) == 1 and result.chosen.answer == "5"


REVISION = {
    "": ["Wrong step.\n\n"],
    "correcting that step.\n<assistant>": ["Right step.\n\n"],
    "Right step.\n\n": ["The answer is 5."],
    "Wrong step.\n\n": ["The answer is 4."],
}


@pytest.mark.asyncio
@pytest.mark.parametrize("revised_score, expected", [
    (0.8, "Right step.\n\nThe answer is 5."),
    (0.05, "Wrong step.\n\nThe answer is 4."),  # a worse revision is not kept
])
async def test_a_rejected_step_is_critiqued_and_revised(revised_score, expected):
    generator = ScriptedGenerator(by_prompt_suffix(REVISION))
    judge = ScriptedCritic({"Wrong step.": 0.1, "Right step.": revised_score},
                           critique="It adds instead of multiplying.")
    ctx = search_context(generator, critic=judge, question="What is 2 * 3?")
    result = await critic.run(ctx, CriticParams(k=1, beam_width=1, temperature=0.4))

    assert judge.critiqued == [[StepToJudge("", "Wrong step.\n\n")]]
    revision_prompt, revision_spec = generator.calls[1]
    prompt = generator.decode(revision_prompt)
    assert prompt.startswith("<user>What is 2 * 3?\n\n")
    assert "Step: Wrong step.\n\nCritic: It adds instead of multiplying." in prompt
    assert (revision_spec.n, revision_spec.temperature, revision_spec.stop) == (1, 0.4, ("\n\n",))
    revise = next(step for step in result.trace if step["step"] == "revise")
    assert (revise["node"], revise["revision"], revise["score"]) == ("0", "1", revised_score)
    assert [child["text"] for child in result.tree["root"]["children"]] == ["Wrong step.\n\n",
                                                                           "Right step.\n\n"]
    assert result.chosen.sample.text == expected


@pytest.mark.asyncio
async def test_revisions_stop_at_max_revisions():
    generator = ScriptedGenerator(by_prompt_suffix(REVISION))
    judge = ScriptedCritic({"Wrong step.": 0.1, "Right step.": 0.2})
    ctx = search_context(generator, critic=judge)
    await critic.run(ctx, CriticParams(k=1, beam_width=1, max_revisions=3, max_steps=1))
    # The rewrite repeats "Right step." each time: judged once, critiqued on every round.
    assert [len(batch) for batch in judge.critiqued] == [1, 1, 1]
    assert judge.critiqued[1] == [StepToJudge("", "Right step.\n\n")]


@pytest.mark.asyncio
async def test_the_critic_strategy_needs_a_critic():
    ctx = search_context(ScriptedGenerator(by_prompt_suffix(BEAMS)))
    with pytest.raises(ValueError):
        await critic.run(ctx, CriticParams())


C, I = ord("C"), ord("I")


def verdicts(prompt_ids, spec):
    """The critic model: sure of "good" steps, doubtful of "bad" ones, mute on the rest."""
    prompt = "".join(chr(i) for i in prompt_ids)
    if spec.max_tokens != 1:
        return [Sample([ord(c) for c in "  Looks off.  "], "  Looks off.  ", [-1.0] * 14)]
    if "## Last Step\ngood" in prompt:
        top = {C: math.log(0.6), I: math.log(0.2), 7: math.log(0.2)}
    elif "## Last Step\nbad" in prompt:
        top = {C: math.log(0.1), I: math.log(0.6)}
    else:
        top = {7: -0.01}
    return [Sample([7], "x", [top.get(7, -5.0)], [top], "length")]


@pytest.mark.asyncio
async def test_the_prompted_critic_reads_p_correct_from_one_token_after_the_answer_tag():
    generator = ScriptedGenerator(verdicts)
    context = ScoringContext([1], "What is 2 + 3?", MeteredGenerator(generator))
    steps = [StepToJudge("", "good\n\n"), StepToJudge("So far.\n\n", "bad"), StepToJudge("", "meh")]
    scores = await PromptedStepCritic().judge(context, steps)
    assert scores == pytest.approx([0.75, 1 / 7, 0.5])
    prompt = generator.decode(generator.calls[0][0])
    assert prompt == (f"<system>{SYSTEM_PROMPT}\n<user>## Problem\nWhat is 2 + 3?\n\n"
                      "## Partial Solution\nLet's solve this problem.\n\n## Last Step\ngood\n"
                      "<assistant><Answer>")
    assert "## Partial Solution\nSo far.\n\n## Last Step\nbad\n" in generator.decode(generator.calls[1][0])
    assert all((spec.max_tokens, spec.temperature, spec.logprobs) == (1, 0.0, 20)
               for _, spec in generator.calls)
    assert context.generator.usage.engine_calls == 3


@pytest.mark.asyncio
async def test_the_prompted_critique_is_greedy_and_stops_before_the_verdict():
    generator = ScriptedGenerator(verdicts)
    context = ScoringContext([1], "What is 2 + 3?", MeteredGenerator(generator))
    assert await PromptedStepCritic().critique(context, [StepToJudge("", "bad")]) == ["Looks off."]
    prompt_ids, spec = generator.calls[0]
    assert generator.decode(prompt_ids).endswith("## Last Step\nbad\n<assistant>")
    assert (spec.temperature, spec.stop, spec.max_tokens) == (0.0, ("<Answer>",), 256)


@pytest.mark.asyncio
async def test_a_critic_on_a_second_model_uses_that_model_under_the_same_budget():
    actor = ScriptedGenerator([])
    second = ScriptedGenerator(verdicts)
    budget = Budget(max_tokens=100)
    context = ScoringContext([1], "What is 2 + 3?", MeteredGenerator(actor, budget))
    second_model = MeteredGenerator(second, budget)
    scores = await PromptedStepCritic(generator=second_model).judge(context, [StepToJudge("", "good")])
    assert scores == pytest.approx([0.75])
    assert actor.calls == [] and len(second.calls) == 1
    assert budget.spent_tokens == 1 and second_model.usage.completion_tokens == 1
