"""Step-level confidence pruning in the step searches (search.pruning.StepPruning in mcts and
critic) on a scripted generator whose per-token confidence is scripted by the step's text."""

import asyncio
from dataclasses import replace

import pytest

from search import critic, mcts, parse_params
from search.critic import CriticParams
from search.mcts import MCTSParams
from search.params import PruneSettings
from search.pruning import StepPruning
from search.tree import Tree
from tests.unit.scripted import PathScorer, ScriptedCritic, ScriptedGenerator, by_prompt_suffix, sample, search_context

TABLE = {
    "": ["Step A.\n\n", "Step B.\n\n", "Step C.\n\n", "Step D.\n\n"],
    "Step A.\n\n": ["The answer is 5."],
    "Step B.\n\n": ["The answer is 7."],
    "Step C.\n\n": ["The answer is 5."],
    "Step D.\n\n": ["The answer is 9."],
}
# Each step's recorded self-certainty, the same for all its tokens.
CONFIDENCE = {"Step A.": 4.0, "Step B.": 2.0, "Step C.": 3.5, "Step D.": 1.0}


def confident(table: dict, confidence: dict[str, float], default: float = 5.0):
    """by_prompt_suffix's script with each sample's tokens at its text's confidence."""
    respond = by_prompt_suffix(table, across_calls=True)

    def script(prompt_ids, spec):
        return [replace(s, token_self_certainty=[confidence.get(s.text.strip(), default)] * len(s.token_ids))
                for s in respond(prompt_ids, spec)]
    return script


def engine(table=TABLE, confidence=CONFIDENCE) -> ScriptedGenerator:
    generator = ScriptedGenerator(confident(table, confidence))
    generator.records_self_certainty = True
    return generator


def expanded_prompts(generator: ScriptedGenerator) -> list[str]:
    return ["".join(map(chr, prompt)) for prompt, _ in generator.calls]


def test_the_first_steps_set_the_threshold_and_later_steps_below_it_are_pruned():
    pruning = StepPruning(PruneSettings(warmup=2, percentile=50.0, window=4))
    assert pruning.keeps(sample("abcdefgh", confidence=[4.0] * 8))
    assert pruning.threshold is None
    assert pruning.keeps(sample("abc", confidence=[2.0] * 3))  # shorter than a window: its mean
    assert pruning.threshold == 3.0
    assert pruning.keeps(sample("abcdef", confidence=[3.0] * 6))
    assert not pruning.keeps(sample("abcdef", confidence=[5.0, 5.0, 1.0, 1.0, 1.0, 5.0]))  # a window of 2.0
    # While generated: stopped at the first full window below the threshold, not before.
    assert not pruning.should_stop(0, sample("abc", confidence=[1.0] * 3, finish_reason=None))
    assert pruning.should_stop(0, sample("abcd", confidence=[1.0] * 4, finish_reason=None))
    assert not pruning.should_stop(0, sample("abcd", confidence=[3.0] * 4, finish_reason=None))
    assert pruning.report()["pruned"] == 1 and pruning.report()["warmup"] == 2


@pytest.mark.asyncio
async def test_mcts_never_expands_a_pruned_step_and_reports_it():
    generator = engine()
    ctx = search_context(generator, scorer=PathScorer({}))
    params = MCTSParams(root_k=4, k=1, iterations=8, include_greedy=False,
                        prune={"warmup": 2, "percentile": 50.0, "window": 64})
    result = await mcts.run(ctx, params)

    # A (4.0) and B (2.0) set the threshold, 3.0: C (3.5) grows on, D (1.0) is pruned.
    assert result.pruning["threshold"] == 3.0 and result.pruning["pruned"] == 1
    tree = Tree.from_dict(result.tree)
    pruned = [node for node in tree.nodes() if node.pruned]
    assert [node.text for node in pruned] == ["Step D.\n\n"] and not pruned[0].children
    assert tree.prune_threshold == 3.0
    prompts = expanded_prompts(generator)
    assert not any(prompt.endswith("Step D.\n\n") for prompt in prompts)
    assert any(prompt.endswith("Step C.\n\n") for prompt in prompts)
    # Every step after the warm-up was generated under the stop rule, reading the engine's record.
    assert all(spec.token_self_certainty for _, spec in generator.calls)
    assert result.chosen.answer in ("5", "7")


@pytest.mark.asyncio
async def test_a_step_is_cut_while_generated_and_its_tokens_are_paid_for():
    # The root's two steps set the threshold (percentile 0: the lower, 2.0); A's step is cut.
    table = {"": ["Step A.\n\n", "Step B.\n\n"], "Step A.\n\n": ["Step D then more words.\n\n"],
             "Step B.\n\n": ["The answer is 7."]}
    generator = engine(table, {**CONFIDENCE, "Step D then more words.": 1.0})
    ctx = search_context(generator, scorer=PathScorer({}))
    params = MCTSParams(root_k=2, k=1, iterations=6, include_greedy=False,
                        prune={"warmup": 2, "percentile": 0.0, "window": 4})
    result = await mcts.run(ctx, params)

    assert generator.aborted == [(0, 4)]  # after its first window of 4 tokens
    assert result.pruning["cut_mid_step"] == 1 and result.pruning["stopped_tokens"] == 4
    assert result.pruning["pruned"] == 1
    assert result.usage.completion_tokens == ctx.generator.budget.spent_tokens


@pytest.mark.asyncio
async def test_mcts_ends_when_every_leaf_left_is_pruned():
    table = {"": ["Step A.\n\n"], "Step A.\n\n": ["Step B.\n\n"], "Step B.\n\n": ["The answer is 7."]}
    generator = engine(table, {"Step A.": 4.0, "Step B.": 1.0})
    ctx = search_context(generator, scorer=PathScorer({}))
    params = MCTSParams(root_k=1, k=1, iterations=50, parallel=4, include_greedy=False,
                        prune={"warmup": 1, "percentile": 100.0})
    result = await asyncio.wait_for(mcts.run(ctx, params), timeout=10)

    assert result.pruning["pruned"] == 1
    # The pruned step is completed greedily only to give an answer, never expanded a step further.
    assert result.chosen.sample.text == "Step A.\n\nStep B.\n\nThe answer is 7."
    assert sum(spec.stop == ("\n\n",) for _, spec in generator.calls) == 2


@pytest.mark.asyncio
async def test_critic_never_judges_a_pruned_step():
    generator = engine()
    judge = ScriptedCritic({})
    ctx = search_context(generator, critic=judge)
    params = CriticParams(k=4, beam_width=4, max_steps=2, max_revisions=0, include_greedy=False,
                          prune={"warmup": 2, "percentile": 50.0})
    result = await critic.run(ctx, params)

    judged = {step.step for batch in judge.judged for step in batch}
    assert "Step D.\n\n" not in judged and "Step C.\n\n" in judged
    assert result.pruning["pruned"] == 1


def test_the_step_searches_take_prune_and_self_agreement_does_not():
    assert parse_params("mcts", {"prune": True}).prune == PruneSettings()
    assert parse_params("critic", {"prune": {"window": 8}}).prune.window == 8
    assert parse_params("mcts", {}).prune is None


@pytest.mark.asyncio
async def test_critic_keeps_the_step_it_had_when_its_revision_is_pruned():
    # A's step is rejected; its revision is unconfident (1.0 < the threshold 3.0): pruned, not taken.
    table = {"": ["Step A.\n\n", "Step B.\n\n"], "Step A.\n\n": ["The answer is 5."],
             "Step B.\n\n": ["The answer is 7."], "correcting that step.\n<assistant>": ["Step D.\n\n"]}
    generator = engine(table)
    judge = ScriptedCritic({"Step A.": 0.2})
    ctx = search_context(generator, critic=judge)
    params = CriticParams(k=2, beam_width=2, max_steps=2, max_revisions=1, include_greedy=False,
                          prune={"warmup": 2, "percentile": 50.0})
    result = await critic.run(ctx, params)

    judged = [step.step for batch in judge.judged for step in batch]
    [revised] = [step for step in result.trace if step["step"] == "revise"]
    assert revised["score"] is None and "Step D.\n\n" not in judged
    assert result.pruning["pruned"] == 1
    assert "Step A.\n\n" in result.chosen.sample.text or "Step B.\n\n" in result.chosen.sample.text
