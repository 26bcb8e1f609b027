"""Every node of a tree records the engine call that generated it: when, which request, and what
it cost, in the search's call order (MeteredGenerator stamps each sample; the tree builders copy it)."""

from dataclasses import replace

import pytest

from scorers.mean_logprob import MeanLogprobScorer
from search import best_of_n, mcts, self_consistency
from search.best_of_n import BestOfNParams
from search.mcts import MCTSParams
from search.self_consistency import SelfConsistencyParams
from search.tree import Tree
from search.types import CallTrace
from tests.unit.scripted import PathScorer, ScriptedGenerator, by_prompt_suffix, sample, search_context

TABLE = {
    "": ["Add 2 and 3.\n\n", "Guess.\n\n"],
    "Add 2 and 3.\n\n": ["So 2 + 3 = 5.\n\n", "The answer is 5."],
    "Guess.\n\n": ["The answer is 7."],
    "So 2 + 3 = 5.\n\n": ["The answer is 5."],
}


class NamingGenerator(ScriptedGenerator):
    """Names each call's samples as the engine adapter does, by an engine request id."""

    def __init__(self, script):
        super().__init__(script)
        self.served = 0

    async def generate(self, prompt_ids, spec):
        samples = await super().generate(prompt_ids, spec)
        self.served += 1
        return [replace(s, request_id=f"req-{self.served}", cached_prompt_tokens=2) for s in samples]


def traces(tree: dict) -> list[dict]:
    found, stack = [], list(tree["root"].get("children", []))
    while stack:
        node = stack.pop()
        found.append(node["call"])
        stack += node.get("children", [])
    return found


@pytest.mark.asyncio
async def test_candidates_carry_their_calls_trace_in_the_tree_json():
    generator = NamingGenerator([sample("The answer is 5."), sample("The answer is 57."),
                                 sample("The answer is 7.", finish_reason="length")])
    result = await best_of_n.run(search_context(generator, scorer=MeanLogprobScorer()),
                                 BestOfNParams(n=3, include_greedy=False))
    calls = [child["call"] for child in result.tree["root"]["children"]]
    assert [call["generated_tokens"] for call in calls] == [16, 17, 16]
    assert [call["finish_reason"] for call in calls] == ["stop", "stop", "length"]
    for call in calls:
        assert (call["call"], call["request_id"], call["prompt_tokens"], call["cached_prompt_tokens"]) == \
            (1, "req-1", 3, 2)
        assert call["spent_tokens"] == 49 and call["requested_at"] <= call["finished_at"]
    again = Tree.from_dict(result.tree)
    assert again.to_dict() == result.tree
    assert again.root.children[1].call == CallTrace(**calls[1])


@pytest.mark.asyncio
async def test_rounds_of_an_adaptive_vote_count_calls_and_tokens_in_order():
    generator = ScriptedGenerator([sample("The answer is 5."), sample("The answer is 7.")] * 3)  # never settled
    result = await self_consistency.run(search_context(generator),
                                        SelfConsistencyParams(n=6, batch_size=2, adaptive=True, include_greedy=False))
    calls = [child["call"] for child in result.tree["root"]["children"]]
    assert [call["call"] for call in calls] == [1, 1, 2, 2, 3, 3]
    assert [call["spent_tokens"] for call in calls] == [32, 32, 64, 64, 96, 96]
    assert "request_id" not in calls[0]  # the scripted engine names no request


@pytest.mark.asyncio
async def test_every_mcts_node_has_its_own_call_and_a_resumed_run_counts_after_the_first():
    scorer = PathScorer({})
    generator = NamingGenerator(by_prompt_suffix(TABLE, across_calls=True))
    first = await mcts.run(search_context(generator, scorer=scorer), MCTSParams(iterations=2, k=2, root_k=2))
    first_calls = traces(first.tree)
    assert sorted(call["call"] for call in first_calls) == list(range(1, len(first_calls) + 1))  # n=1 each
    assert first.tree["engine_calls"] == first.usage.engine_calls == len(first_calls)
    assert first.tree["spent_tokens"] == first.usage.completion_tokens
    by_order = sorted(first_calls, key=lambda call: call["call"])
    assert [call["spent_tokens"] for call in by_order] == sorted(call["spent_tokens"] for call in by_order)
    assert by_order[-1]["spent_tokens"] == first.usage.completion_tokens
    assert all(call["prompt_tokens"] >= 3 and call["request_id"].startswith("req-") for call in first_calls)

    generator = NamingGenerator(by_prompt_suffix(TABLE, across_calls=True))
    resumed = await mcts.run(search_context(generator, scorer=scorer), MCTSParams(iterations=6, k=2, root_k=2),
                             tree=Tree.from_dict(first.tree))
    new = [call for call in traces(resumed.tree) if call not in first_calls]
    assert new and min(call["call"] for call in new) == first.usage.engine_calls + 1
    assert min(call["spent_tokens"] for call in new) > first.usage.completion_tokens
    assert resumed.tree["engine_calls"] == first.usage.engine_calls + resumed.usage.engine_calls
