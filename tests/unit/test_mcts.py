import asyncio
import math
from collections import Counter
from dataclasses import replace

import pytest

from scorers.answers import answers_equivalent
from scorers.self_certainty import SelfCertaintyScorer
from search import STRATEGIES, mcts
from search.mcts import MCTSParams, ValueScale, backup, choose, puct, select_leaf
from search.tree import Node, Tree
from tests.unit.scripted import (
    OverlapCounter, PathScorer, ScriptedGenerator, by_prompt_suffix, sample, search_context, terminal,
)


def stats_tree() -> tuple[Tree, Node, Node, Node]:
    """A root visited 10 times with children A (Q 0.5, P 0.2), B (Q 0.3, P 0.5), C (Q 0.7, P 0.3)."""
    tree = Tree(Node(visits=10, value_sum=5.6))
    a = tree.root.add_child(text="A", visits=4, value_sum=2.0, prior=0.2)
    b = tree.root.add_child(text="B", visits=1, value_sum=0.3, prior=0.5)
    c = tree.root.add_child(text="C", visits=5, value_sum=3.5, prior=0.3)
    return tree, a, b, c


def test_puct_picks_the_child_with_the_highest_bound():
    tree, a, b, c = stats_tree()
    root, no_pending = tree.root, {}
    # Q + c * P * sqrt(10) / (1 + n): A 0.5 + 0.2 * 3.1623 / 5, B 0.3 + 0.5 * 3.1623 / 2, ...
    assert puct(a, root, 1.0, no_pending, ValueScale()) == pytest.approx(0.626491, abs=1e-6)
    assert puct(b, root, 1.0, no_pending, ValueScale()) == pytest.approx(1.090569, abs=1e-6)
    assert puct(c, root, 1.0, no_pending, ValueScale()) == pytest.approx(0.858114, abs=1e-6)
    assert select_leaf(tree, 1.0, {}, set()) is b  # exploration wins
    assert select_leaf(tree, 0.1, {}, set()) is c  # little exploration: the best value wins


def test_descents_in_flight_hold_their_leaves_and_weigh_as_virtual_losses():
    tree, a, b, c = stats_tree()
    # B is being grown: the next descent takes C (0.858 against A 0.626).
    assert select_leaf(tree, 1.0, {}, {b}) is c
    # One descent pending through C (a visit worth the floor, 0): C 3.5 / 6 + 0.3 * sqrt(11) / 7
    # = 0.726, still above A 0.633. Three pending: C 3.5 / 8 + 0.3 * sqrt(13) / 9 = 0.558
    # against A 0.5 + 0.2 * sqrt(13) / 5 = 0.644: A.
    assert select_leaf(tree, 1.0, {tree.root: 1, c: 1}, {b}) is c
    assert select_leaf(tree, 1.0, {tree.root: 3, c: 3}, {b}) is a
    assert (tree.root.visits, b.visits, c.visits) == (10, 1, 5)  # pending visits leave no trace


def test_a_subtree_whose_leaves_are_all_held_is_skipped_and_all_held_is_none():
    tree, a, b, c = stats_tree()
    b1, b2 = b.add_child(text="B1", prior=0.5), b.add_child(text="B2", prior=0.5)
    assert select_leaf(tree, 1.0, {}, {b1}) is b2
    assert select_leaf(tree, 1.0, {}, {b1, b2}) is c
    assert select_leaf(tree, 1.0, {}, {a, b1, b2, c}) is None


def test_an_unvalued_child_is_selected_first():
    tree, a, b, c = stats_tree()
    fresh = tree.root.add_child(text="D", prior=0.01)
    assert select_leaf(tree, 1.0, {}, set()) is fresh
    assert select_leaf(tree, 1.0, {}, {fresh}) is b


def test_values_in_other_units_than_probabilities_weigh_against_priors_as_probabilities_would():
    def tree_scored(low: float, high: float) -> Tree:
        # A: value `high`, 5 visits, prior 0.1; B: value `low`, 1 visit, prior 0.9.
        tree = Tree(Node(visits=6))
        tree.root.add_child(text="A", visits=5, value_sum=5 * high, score=high, prior=0.1)
        tree.root.add_child(text="B", visits=1, value_sum=low, score=low, prior=0.9)
        return tree

    # As probabilities: A 1 + 0.1 * sqrt(6) / 6 = 1.04 against B 0 + 0.9 * sqrt(6) / 2 = 1.10.
    assert select_leaf(tree_scored(0.0, 1.0), 1.0, {}, set()).text == "B"
    # In nats (self-certainty 10 and 12) the same: the values span [0, 1] once scaled.
    assert select_leaf(tree_scored(10.0, 12.0), 1.0, {}, set()).text == "B"
    assert ValueScale(10.0, 12.0)(11.5) == pytest.approx(0.75)
    assert ValueScale(0.2, 0.6)(0.5) == 0.5  # probabilities are taken as they are


def test_backup_adds_the_value_to_every_node_on_the_path():
    tree, a, b, c = stats_tree()
    leaf = a.add_child(text="A1", prior=1.0)
    backup(leaf, 0.8)
    backup(leaf, 0.2)
    assert (leaf.visits, leaf.value) == (2, pytest.approx(0.5))
    assert (a.visits, a.value_sum) == (6, pytest.approx(3.0))
    assert (tree.root.visits, tree.root.value_sum) == (12, pytest.approx(6.6))
    assert (b.visits, c.visits) == (1, 5)


def test_the_final_rules_pick_by_visits_by_value_or_by_value_weighted_vote():
    root = Node()
    t1 = terminal(root, "5", visits=4, score=0.5)
    t2 = terminal(root, "7", visits=2, score=0.9)
    t3 = terminal(root, "5", visits=1, score=0.6)
    terminals = [t1, t2, t3]
    assert choose(terminals, "most_visited", answers_equivalent) is t1
    assert choose(terminals, "highest_value", answers_equivalent) is t2
    # "5" weighs 0.5 + 0.6 against 0.9 for "7"; its best-valued path is t3.
    assert choose(terminals, "vote", answers_equivalent) is t3


def test_the_vote_shifts_log_probability_values_and_falls_back_without_answers():
    root = Node()
    t1 = terminal(root, "5", visits=3, score=-1.0)
    t2 = terminal(root, "7", visits=1, score=-0.2)
    t3 = terminal(root, "5", visits=1, score=-0.5)
    # Weights shifted by the lowest (-1): "5" gets 0 + 0.5, "7" gets 0.8.
    assert choose([t1, t2, t3], "vote", answers_equivalent) is t2
    unanswered = [terminal(root, None, visits=1, score=0.9), terminal(root, None, visits=2, score=0.1)]
    assert choose(unanswered, "vote", answers_equivalent) is unanswered[1]


TABLE = {
    "": ["Add 2 and 3.\n\n", "Guess.\n\n", "Think.\n\n"],
    "Add 2 and 3.\n\n": ["So 2 + 3 = 5.\n\n", "The answer is 5."],
    "Guess.\n\n": ["The answer is 7."],
    "Think.\n\n": ["Hmm.\n\n"],
    "So 2 + 3 = 5.\n\n": ["The answer is 5."],
    "Hmm.\n\n": ["The answer is 5."],
}
VALUES = {"Add 2 and 3.\n\n": 0.8, "Guess.\n\n": 0.3, "Think.\n\n": 0.4,
          "Add 2 and 3.\n\nSo 2 + 3 = 5.\n\n": 0.9, "Add 2 and 3.\n\nThe answer is 5.": 0.7,
          "Add 2 and 3.\n\nSo 2 + 3 = 5.\n\nThe answer is 5.": 0.95,
          "Guess.\n\nThe answer is 7.": 0.1, "Think.\n\nHmm.\n\nThe answer is 5.": 0.6}


def context(generator=None, **kw):
    generator = generator or ScriptedGenerator(by_prompt_suffix(TABLE, across_calls=True))
    return generator, search_context(generator, scorer=kw.pop("scorer", PathScorer(VALUES)), **kw)


@pytest.mark.asyncio
async def test_the_answer_is_the_whole_path_and_candidates_are_the_finished_paths():
    generator, ctx = context()
    result = await mcts.run(ctx, MCTSParams(iterations=16, final="highest_value", include_greedy=False))
    chosen = result.chosen
    assert chosen.sample.text == "Add 2 and 3.\n\nSo 2 + 3 = 5.\n\nThe answer is 5."
    assert chosen.sample.token_ids == [ord(ch) for ch in chosen.sample.text]
    assert len(chosen.sample.logprobs) == len(chosen.sample.token_ids)
    assert chosen.answer == "5" and chosen.sample.finish_reason == "stop" and not result.truncated
    texts = sorted(candidate.sample.text for candidate in result.candidates)
    assert texts == sorted(["Add 2 and 3.\n\nThe answer is 5.", "Guess.\n\nThe answer is 7.",
                            "Think.\n\nHmm.\n\nThe answer is 5.", chosen.sample.text])
    assert result.candidates[result.selected_index] is chosen
    assert Tree.from_dict(result.tree).to_dict() == result.tree
    assert result.tree["iterations"] == 16
    assert result.usage.engine_calls == len(generator.calls)


@pytest.mark.asyncio
@pytest.mark.parametrize("final, expected", [
    ("highest_value", "Guess.\n\nThe answer is 7."),
    ("vote", "Add 2 and 3.\n\nSo 2 + 3 = 5.\n\nThe answer is 5."),  # "5" weighs 2.25
    ("most_visited", "Guess.\n\nThe answer is 7."),  # PUCT keeps revisiting the 0.99 path
])
async def test_the_final_rule_decides_the_answer(final, expected):
    _, ctx = context(scorer=PathScorer({**VALUES, "Guess.\n\nThe answer is 7.": 0.99}))
    result = await mcts.run(ctx, MCTSParams(iterations=32, final=final, include_greedy=False))
    assert result.chosen.sample.text == expected
    assert len(result.candidates) == 4
    select = {key: value for key, value in result.trace[-1].items() if key != "greedy"}
    assert select == {"step": "select", "node": result.trace[-1]["node"], "rule": final,
                      "answer": result.chosen.answer}
    assert result.trace[-1]["greedy"]["reason"] == "no greedy candidate"


@pytest.mark.asyncio
async def test_descents_run_side_by_side_and_a_returning_one_starts_again_at_once():
    generator = OverlapCounter(by_prompt_suffix(TABLE, across_calls=True))
    _, ctx = context(generator)
    result = await mcts.run(ctx, MCTSParams(iterations=5, parallel=4, root_k=3, include_greedy=False))
    trace = [(step["step"], step["node"] if "node" in step else step["nodes"]) for step in result.trace
             if step["step"] in ("descent", "value")]
    # The root is grown first (the other descents wait for it), each child valued as it comes
    # back; then three descents go to the engine together, one per child, with k requests each.
    assert trace[:7] == [("descent", ""), ("value", ["0"]), ("value", ["1"]), ("value", ["2"]),
                         ("descent", "0"), ("descent", "2"), ("descent", "1")]
    assert generator.most_in_flight == 9
    assert result.tree["iterations"] == 5
    assert all(spec.n == 1 and spec.stop == ("\n\n",) for _, spec in generator.calls)


@pytest.mark.asyncio
async def test_the_root_grows_root_k_first_steps_and_deeper_nodes_k():
    generator, ctx = context()
    await mcts.run(ctx, MCTSParams(iterations=4, root_k=5, k=2, include_greedy=False))
    requests = Counter(tuple(prompt) for prompt, _ in generator.calls)
    assert requests.pop((1, 2, 3)) == 5 and set(requests.values()) == {2}


class SlowThinker(OverlapCounter):
    """Grows "Think." only after many turns of the event loop, so other descents come back first."""

    async def generate(self, prompt_ids, spec):
        if "".join(map(chr, prompt_ids)).endswith("Think.\n\n"):
            for _ in range(50):
                await asyncio.sleep(0)
        return await super().generate(prompt_ids, spec)


@pytest.mark.asyncio
async def test_while_a_step_is_grown_each_idle_descent_revisits_a_finished_path_once():
    table = {"": ["The answer is 5.", "Think.\n\n"], "Think.\n\n": ["Hmm.\n\n"], "Hmm.\n\n": ["So 5."]}
    generator = SlowThinker(by_prompt_suffix(table, across_calls=True))
    _, ctx = context(generator, scorer=PathScorer({"The answer is 5.": 0.9}))
    result = await mcts.run(ctx, MCTSParams(iterations=40, parallel=4, k=2, root_k=2, include_greedy=False))
    steps = [(step["step"], step.get("node")) for step in result.trace]
    slow = steps.index(("descent", "1"))
    # Revisits waking each other would spend the remaining iterations before "Think." is back.
    assert sum(step == "revisit" for step, _ in steps[slow:steps.index(("expand", "1"))]) <= 3
    assert ("expand", "1.0") in steps


@pytest.mark.asyncio
async def test_after_a_revisit_an_idle_descent_grows_what_can_still_grow():
    table = {"": ["The answer is 5.", "Think.\n\n", "Try.\n\n"], "Think.\n\n": ["Hmm.\n\n"],
             "Try.\n\n": ["So 5."], "Hmm.\n\n": ["So 5."]}
    generator = SlowThinker(by_prompt_suffix(table, across_calls=True))
    scorer = PathScorer({"The answer is 5.": 0.9, "Think.\n\n": 0.6}, default=0.3)
    _, ctx = context(generator, scorer=scorer)
    result = await mcts.run(ctx, MCTSParams(iterations=16, parallel=2, k=1, root_k=3, include_greedy=False))
    steps = [(step["step"], step.get("node")) for step in result.trace]
    # Alone, a descent revisits the finished path until "Think." is worth growing; while that is
    # in the engine, the other descent revisits once and then grows "Try." instead of waiting.
    think = steps.index(("descent", "1"))
    assert steps[think + 1:think + 4] == [("descent", "0"), ("revisit", "0"), ("descent", "2")]
    assert steps.index(("expand", "2")) < steps.index(("expand", "1"))


@pytest.mark.asyncio
async def test_a_child_is_valued_while_its_siblings_still_decode():
    events = []

    class SlowGreedy(ScriptedGenerator):
        async def generate(self, prompt_ids, spec):
            for _ in range(20 if spec.temperature == 0 else 0):
                await asyncio.sleep(0)
            samples = await super().generate(prompt_ids, spec)
            events.append(("back", samples[0].text))
            return samples

    class RecordingScorer(PathScorer):
        async def score(self, context, candidates):
            events.append(("valued", [sample.text for sample in candidates]))
            return await super().score(context, candidates)

    script = lambda prompt, spec: [sample("Greedy.\n\n" if spec.temperature == 0 else "Sampled.\n\n")]
    _, ctx = context(SlowGreedy(script), scorer=RecordingScorer({}))
    await mcts.run(ctx, MCTSParams(iterations=1, root_k=2))
    assert events.index(("valued", ["Sampled.\n\n"])) < events.index(("back", "Greedy.\n\n"))
    assert ("valued", ["Greedy.\n\n"]) in events


@pytest.mark.asyncio
async def test_rollout_values_a_step_by_its_greedy_run_to_the_end():
    _, ctx = context(scorer=PathScorer({}))
    await mcts.run(ctx, MCTSParams(iterations=1, rollout=True, include_greedy=False))
    # One greedy rollout per child; the fourth call completes the chosen path at the end.
    rollouts = [spec for _, spec in ctx.generator.inner.calls if not spec.stop]
    assert [(spec.n, spec.temperature) for spec in rollouts] == [(1, 0.0)] * 4
    assert ctx.scorer.batches == [["Add 2 and 3.\n\nSo 2 + 3 = 5.\n\n"], ["Guess.\n\nThe answer is 7."],
                                  ["Think.\n\nHmm.\n\n"]]


@pytest.mark.asyncio
async def test_at_max_depth_a_leaf_is_completed_greedily():
    generator, ctx = context()
    result = await mcts.run(ctx, MCTSParams(iterations=5, max_depth=1, include_greedy=False))
    completions = [spec for _, spec in generator.calls if spec.stop == ()]
    assert len(completions) == 3 and all(spec.n == 1 and spec.temperature == 0.0 for spec in completions)
    assert all(node["terminal"] for child in result.tree["root"]["children"] for node in child["children"])


@pytest.mark.asyncio
async def test_without_a_finished_path_the_best_path_is_completed_greedily():
    generator, ctx = context()
    result = await mcts.run(ctx, MCTSParams(iterations=1))
    # Only the root was expanded; its children have a visit each and "Add 2 and 3." the best value.
    assert result.chosen.sample.text == "Add 2 and 3.\n\nSo 2 + 3 = 5.\n\n"
    assert generator.calls[-1][0] == [1, 2, 3] + [ord(ch) for ch in "Add 2 and 3.\n\n"]
    assert generator.calls[-1][1].stop == () and generator.calls[-1][1].temperature == 0.0
    assert result.candidates == [result.chosen] and not result.truncated


@pytest.mark.asyncio
async def test_a_stored_tree_continues_where_it_stopped():
    _, ctx = context()
    # Without greedy's answer, whose completion would finish this small tree at once.
    first = await mcts.run(ctx, MCTSParams(iterations=2, include_greedy=False))
    stored = first.tree
    before = {node.address(): node.text for node in Tree.from_dict(stored).nodes()}

    generator, ctx = context()
    resumed = await mcts.run(ctx, MCTSParams(iterations=8, include_greedy=False), tree=Tree.from_dict(stored))
    after = {node.address(): node.text for node in Tree.from_dict(resumed.tree).nodes()}
    assert len(after) > len(before)
    assert all(after[address] == text for address, text in before.items())
    assert resumed.tree["iterations"] == 8
    assert resumed.tree["root"]["visits"] > stored["root"]["visits"]
    assert generator.calls[0][0] != [1, 2, 3]  # the root was not expanded again

    generator, ctx = context()
    again = await mcts.run(ctx, MCTSParams(iterations=8, include_greedy=False), tree=Tree.from_dict(resumed.tree))
    assert generator.calls == [] and again.tree == resumed.tree
    assert again.chosen.sample.text == resumed.chosen.sample.text


@pytest.mark.asyncio
async def test_a_run_stopped_by_the_budget_resumes_with_a_larger_one():
    _, ctx = context(budget_tokens=40)
    cut = await mcts.run(ctx, MCTSParams(iterations=8))
    assert cut.truncated and cut.usage.completion_tokens <= 40
    _, ctx = context(budget_tokens=1000)
    resumed = await mcts.run(ctx, MCTSParams(iterations=8), tree=Tree.from_dict(cut.tree))
    assert not resumed.truncated and resumed.tree["iterations"] == 8
    assert len(list(Tree.from_dict(resumed.tree).nodes())) > len(list(Tree.from_dict(cut.tree).nodes()))


@pytest.mark.asyncio
async def test_mcts_refuses_a_scorer_that_needs_top_logprobs():
    _, ctx = context(scorer=SelfCertaintyScorer("tail"))
    with pytest.raises(ValueError):
        await mcts.run(ctx, MCTSParams())


def test_registered_as_resumable_with_self_certainty_by_default():
    assert STRATEGIES["mcts"].resumable and not STRATEGIES["critic"].resumable
    params = MCTSParams()
    assert (params.scorer, params.k, params.iterations, params.c_puct, params.max_depth,
            params.parallel, params.final, params.step_delimiter) == (
        "self_certainty", 3, 16, 1.0, 8, 8, "most_visited", "\n\n")
    assert math.isclose(params.temperature, 0.7)


class CertaintyRecorder(ScriptedGenerator):
    """Records a self-certainty for every token when asked: 10 + the token's position in its
    step for "Add" steps, 2 for any other."""

    def __init__(self, script):
        super().__init__(script)
        self.records_self_certainty = True

    async def generate(self, prompt_ids, spec):
        samples = await super().generate(prompt_ids, spec)
        if not spec.token_self_certainty:
            return samples
        return [replace(s, token_self_certainty=[10.0 + i if s.text.startswith("Add") else 2.0
                                                 for i in range(len(s.token_ids))]) for s in samples]


@pytest.mark.asyncio
async def test_nodes_are_valued_by_the_self_certainty_the_engine_recorded_along_their_path():
    generator = CertaintyRecorder(by_prompt_suffix(TABLE, across_calls=True))
    _, ctx = context(generator, scorer=SelfCertaintyScorer())
    result = await mcts.run(ctx, MCTSParams(iterations=6, root_k=3, include_greedy=False))
    assert all(spec.token_self_certainty for _, spec in generator.calls)
    tree = Tree.from_dict(result.tree)
    for node in list(tree.nodes())[1:]:
        path = node.path_self_certainty()
        assert path is not None and node.score == pytest.approx(sum(path) / len(path))
    add = next(child for child in tree.root.children if child.text.startswith("Add"))
    # "Add 2 and 3." is 12 tokens, recorded 10..21 (the search appended the delimiter: no record).
    assert add.token_ids[-2:] == [10, 10] and add.score == pytest.approx(15.5) and add.visits == max(c.visits for c in tree.root.children)


@pytest.mark.asyncio
async def test_a_rollout_adds_its_own_recorded_self_certainty_to_the_paths():
    generator = CertaintyRecorder(by_prompt_suffix(TABLE, across_calls=True))
    _, ctx = context(generator, scorer=SelfCertaintyScorer())
    result = await mcts.run(ctx, MCTSParams(iterations=1, rollout=True, include_greedy=False))
    add = next(child for child in Tree.from_dict(result.tree).root.children if child.text.startswith("Add"))
    # The step's 12 records (10..21) and its rollout "So 2 + 3 = 5.\n\n", 15 tokens at 2:
    # (186 + 30) / 27. The tree keeps the step's records only.
    assert add.score == pytest.approx(8.0) and add.self_certainty == [10.0 + i for i in range(12)]
