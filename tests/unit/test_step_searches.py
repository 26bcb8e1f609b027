"""What mcts and critic share: steps in token ids, greedy completion, and the budget."""

import math

import pytest

from scorers.p_true import PTrueScorer
from scorers.step_critic import PromptedStepCritic
from search import STRATEGIES, critic, mcts
from search.critic import CriticParams
from search.mcts import MCTSParams
from search.params import StepParams
from search.steps import StepSearch, answer_weights
from tests.unit.scripted import (
    PathScorer, ScriptedCritic, ScriptedGenerator, by_prompt_suffix, search_context,
)


def ids(text: str) -> list[int]:
    return [ord(c) for c in text]


def step_search(table, ids_keep_stop=False, params=None, **context):
    generator = ScriptedGenerator(by_prompt_suffix(table, ids_keep_stop))
    ctx = search_context(generator, **context)
    return generator, StepSearch(ctx, params or StepParams(include_greedy=False), "test")


@pytest.mark.asyncio
@pytest.mark.parametrize("ids_keep_stop", [False, True], ids=["engine drops stop ids", "vLLM keeps them"])
async def test_a_step_keeps_its_delimiter_and_an_answer_end_is_terminal(ids_keep_stop):
    generator, search = step_search(
        {"": ["First, 2 + 3.\n\nSecond", "The answer is 5."], "First, 2 + 3.\n\n": ["So 5."]},
        ids_keep_stop)
    root = search.tree.root
    [children] = await search.expand([root], 2)

    assert [child.text for child in children] == ["First, 2 + 3.\n\n", "The answer is 5."]
    assert children[0].token_ids == ids("First, 2 + 3.\n\n")  # the delimiter once, never twice
    assert len(children[0].logprobs) == len(children[0].token_ids)
    assert [child.terminal for child in children] == [False, True]
    assert (children[0].answer, children[1].answer) == (None, "5")
    [(prompt, spec)] = generator.calls
    assert prompt == [1, 2, 3] and spec.n == 2 and spec.stop == ("\n\n",) and spec.chosen_logprobs

    [[grandchild]] = await search.expand([children[0]], 1)
    assert generator.calls[1][0] == [1, 2, 3] + ids("First, 2 + 3.\n\n")
    assert grandchild.terminal and grandchild.answer == "5"
    assert search.path_sample(grandchild).text == "First, 2 + 3.\n\nSo 5."
    assert search.path_sample(grandchild).token_ids == ids("First, 2 + 3.\n\nSo 5.")


@pytest.mark.asyncio
async def test_a_custom_delimiter_steps_and_the_clients_stop_string_ends_the_answer():
    generator, search = step_search({"": ["x = 1\nmore", "so 5 END ignored"]},
                                    params=StepParams(step_delimiter="\n", include_greedy=False), stop=("END",))
    [children] = await search.expand([search.tree.root], 2)
    assert [(child.text, child.terminal) for child in children] == [("x = 1\n", False), ("so 5 ", True)]
    assert generator.calls[0][1].stop == ("\n", "END")


@pytest.mark.asyncio
async def test_a_step_cut_short_continues_unless_the_answer_is_full():
    _, search = step_search({"": ["abcdefghijklmno"]}, max_tokens=10)
    [[full]] = await search.expand([search.tree.root], 1)
    assert full.terminal and search.path_sample(full).finish_reason == "length"

    generator, search = step_search({"": ["abcdefgh\n\n"], "abcd": ["efgh\n\n"]}, budget_tokens=4)
    [[shortened]] = await search.expand([search.tree.root], 1)
    assert (shortened.text, shortened.terminal) == ("abcd", False)  # the budget cut it: go on
    search.ctx.generator.budget.max_tokens = None
    [[rest]] = await search.expand([shortened], 1)
    assert generator.calls[1][0] == [1, 2, 3] + ids("abcd")
    assert search.path_sample(rest).text == "abcdefgh\n\n"


@pytest.mark.asyncio
async def test_identical_samples_make_one_child_and_priors_are_a_softmax_of_mean_logprobs():
    _, search = step_search({"": [("Same.\n\n", -1.0), ("Same.\n\n", -1.0), ("Other.\n\n", -2.0)]})
    [children] = await search.expand([search.tree.root], 3)
    assert [child.text for child in children] == ["Same.\n\n", "Other.\n\n"]
    assert [child.prior for child in children] == pytest.approx(
        [1 / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1))])


def greedy_or_sampled(greedy: str, sampled: list[str]):
    """A script writing `greedy` at temperature 0 and `sampled`, in turn, otherwise."""
    sampled_script = by_prompt_suffix({"": sampled})
    greedy_script = by_prompt_suffix({"": [greedy]})
    return lambda prompt, spec: (greedy_script if spec.temperature == 0 else sampled_script)(prompt, spec)


@pytest.mark.asyncio
async def test_the_first_child_of_an_expansion_is_the_greedy_step_sent_beside_the_samples():
    generator = ScriptedGenerator(greedy_or_sampled("Add.\n\n", ["Guess.\n\n", "Add.\n\n"]))
    search = StepSearch(search_context(generator), StepParams(), "test")
    parents = [search.tree.root]
    [children] = await search.expand(parents, 3)
    # The greedy step first; the sample repeating it is the same child.
    assert [child.text for child in children] == ["Add.\n\n", "Guess.\n\n"]
    [(_, greedy), (_, sampled)] = generator.calls
    assert (greedy.n, greedy.temperature, greedy.stop) == (1, 0.0, ("\n\n",))
    assert (sampled.n, sampled.temperature) == (2, StepParams().temperature)

    [grandchildren, others] = await search.expand(children, 2)  # two parents, one batch
    assert [len(call[0]) for call in generator.calls[2:]] == [3 + 6] * 2 + [3 + 8] * 2
    assert [child.text for child in grandchildren] == ["Add.\n\n", "Guess.\n\n"]


@pytest.mark.asyncio
@pytest.mark.parametrize("params, k", [(StepParams(include_greedy=False), 3),
                                       (StepParams(temperature=0.0), 3), (StepParams(), 1)],
                         ids=["asked not to", "greedy anyway", "one child"])
async def test_no_separate_greedy_request_when_not_asked_greedy_anyway_or_one_child(params, k):
    generator = ScriptedGenerator(greedy_or_sampled("Add.\n\n", ["Guess.\n\n"]))
    search = StepSearch(search_context(generator), params, "test")
    await search.expand([search.tree.root], k)
    [(_, spec)] = generator.calls
    assert (spec.n, spec.temperature) == (k, params.temperature)


@pytest.mark.asyncio
async def test_completion_is_greedy_and_runs_past_the_delimiter():
    generator, search = step_search({"": ["Step.\n\nThe answer is 5."]}, seed=7, stop=("END",))
    [done] = await search.complete([search.tree.root])
    assert done.text == "Step.\n\nThe answer is 5." and done.terminal and done.answer == "5"
    spec = generator.calls[0][1]
    assert (spec.n, spec.temperature, spec.stop) == (1, 0.0, ("END",))
    assert spec.seed is not None


def test_answer_weights_shift_negative_scores_and_leave_probabilities():
    assert answer_weights([0.2, 0.9, None]) == [0.2, 0.9, 0.0]
    assert answer_weights([-1.0, -0.25, None]) == [0.0, 0.75, 0.0]


TABLE = {
    "": ["Add 2 and 3.\n\n", "Guess.\n\n", "Think.\n\n"],
    "Add 2 and 3.\n\n": ["So 2 + 3 = 5.\n\n", "The answer is 5."],
    "Guess.\n\n": ["The answer is 7."],
    "Think.\n\n": ["Hmm.\n\n"],
    "So 2 + 3 = 5.\n\n": ["The answer is 5."],
    "Hmm.\n\n": ["The answer is 5."],
    "The proposed answer is: (": ["A"],  # p_true
    "<Answer>": ["Correct"],  # the step critic's verdict
    "<assistant>": ["The step looks fine to me, as far as I can tell."],  # its critique
    "correcting that step.\n<assistant>": ["Add 2 and 3.\n\n"],  # a revision
}


def run_step_search(name, budget_tokens):
    generator = ScriptedGenerator(by_prompt_suffix(TABLE))
    ctx = search_context(generator, scorer=PTrueScorer(), critic=PromptedStepCritic(),
                         budget_tokens=budget_tokens)
    params = MCTSParams(iterations=12) if name == "mcts" else CriticParams(accept_threshold=1.0)
    return STRATEGIES[name].run(ctx, params)


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ["mcts", "critic"])
@pytest.mark.parametrize("budget_tokens", [1, 3, 10, 25, 40, 60, 90, 140, 200])
async def test_usage_never_exceeds_the_budget_and_running_out_says_truncated(name, budget_tokens):
    result = await run_step_search(name, budget_tokens)
    unlimited = await run_step_search(name, None)
    assert result.usage.completion_tokens <= budget_tokens
    if result.usage.completion_tokens < unlimited.usage.completion_tokens:
        assert result.truncated
        assert any(step["step"] == "truncated" for step in result.trace)
    assert not unlimited.truncated and unlimited.chosen.answer in ("5", "7")


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ["mcts", "critic"])
async def test_with_a_few_tokens_left_the_answer_is_what_a_greedy_call_affords(name):
    generator = ScriptedGenerator(by_prompt_suffix(TABLE))
    # One token cannot pay for k > 1 samples, but it pays for a one-token greedy answer.
    ctx = search_context(generator, scorer=PathScorer({}), critic=ScriptedCritic({}), budget_tokens=1)
    result = await STRATEGIES[name].run(ctx, STRATEGIES[name].params())
    assert result.truncated and result.usage.completion_tokens == 1
    assert result.chosen.sample.text == "A" and result.chosen.sample.finish_reason == "length"
    assert [spec.temperature for _, spec in generator.calls] == [0.0]


@pytest.mark.asyncio
async def test_progress_is_reported_every_round():
    reports = []
    ctx = search_context(ScriptedGenerator(by_prompt_suffix(TABLE)), scorer=PathScorer({}),
                         critic=ScriptedCritic({}), progress=reports.append)
    await mcts.run(ctx, MCTSParams(iterations=4))
    await critic.run(ctx, CriticParams())
    assert [report["strategy"] for report in reports][0] == "mcts"
    assert reports[-1]["strategy"] == "critic" and reports[-1]["candidates"] >= 1
    # Every finished descent reports, one per iteration.
    assert [r["round"] for r in reports if r["strategy"] == "mcts"] == [1, 2, 3, 4]
    assert reports[-1]["completion_tokens"] == ctx.generator.usage.completion_tokens


@pytest.mark.asyncio
async def test_parallel_descents_spend_the_budget_their_reservations_held_back():
    """A descent refused while others hold worst-case reservations waits for them instead of
    ending the search: parallel MCTS spends the whole budget, as a sequential one does."""
    spent = {}
    for parallel in (1, 8):
        ctx = search_context(ScriptedGenerator(by_prompt_suffix(TABLE)), scorer=PTrueScorer(),
                             budget_tokens=140)
        result = await mcts.run(ctx, MCTSParams(iterations=12, parallel=parallel))
        assert result.truncated
        spent[parallel] = result.usage.completion_tokens
    assert spent == {1: 140, 8: 140}
