"""A tree's event feed: the progress a search publishes rebuilds its tree, this process's
listeners and late readers see the same events in order, and only in the tree's scope."""

import asyncio

import pytest
from vllm import SamplingParams

from search import mcts
from search.mcts import MCTSParams
from search.tree import Tree
from server.search_service import SearchJob, SearchService
from server.tree_feed import TreeFeeds
from server.tree_store import MemoryTreeStore
from tests.unit.scripted import PathScorer, ScriptedGenerator, by_prompt_suffix, sample, search_context
from tests.unit.test_node_traces import TABLE


def replay(events: list[dict]) -> dict[str, dict]:
    """What a viewer holds after `events`: each node's view by address, with its latest stats."""
    nodes: dict[str, dict] = {}
    for event in events:
        for view in event["nodes"]:
            assert view["address"] == "" or view["address"].rpartition(".")[0] in nodes  # parents first
            nodes[view["address"]] = dict(view)
        for address, visits, value_sum, score in event["stats"]:
            nodes[address].update(visits=visits, value_sum=value_sum, score=score)
    return nodes


@pytest.mark.asyncio
async def test_the_progress_of_an_mcts_search_rebuilds_its_tree():
    events = []
    ctx = search_context(ScriptedGenerator(by_prompt_suffix(TABLE, across_calls=True)), scorer=PathScorer({}),
                         progress=events.append)
    result = await mcts.run(ctx, MCTSParams(iterations=6, k=2, root_k=2, parallel=2))
    tree = Tree.from_dict(result.tree)
    rebuilt = replay(events)
    assert set(rebuilt) == {node.address() for node in tree.nodes()}
    for node in tree.nodes():
        view = rebuilt[node.address()]
        assert (view.get("visits", 0), view.get("value_sum", 0.0), view.get("score")) == \
            (node.visits, node.value_sum, node.score)
        assert view.get("text", "") == node.text and view.get("call") == (node.call and node.call.to_dict())
    assert sum(len(event["nodes"]) for event in events) == len(rebuilt)  # each node is sent once


class ScriptedEngine(ScriptedGenerator):
    """The scripted generator as the search service expects its engine."""

    fingerprint = "scripted"
    max_logprobs = 20

    def __init__(self, script, delay_s: float = 0.0):
        super().__init__(script)
        self.delay_s = delay_s

    def for_request(self, sampling, request_id):
        return self

    async def generate(self, prompt_ids, spec):
        await asyncio.sleep(self.delay_s)
        return await super().generate(prompt_ids, spec)


def job(service: SearchService, scope: str = "key-a") -> SearchJob:
    plan = service.plan({"strategy": "self_consistency", "n": 4, "adaptive": True, "batch_size": 2,
                         "include_greedy": False}, None)
    return SearchJob(plan, "What is 2 + 3?", (1, 2, 3), SamplingParams(max_tokens=32), 32, "req-1", scope=scope,
                     model="tiny")


def kinds(events: list[dict]) -> list[str]:
    return [event["type"] for event in events]


@pytest.mark.asyncio
async def test_a_search_publishes_start_progress_and_done_to_listeners_and_late_readers():
    service = SearchService(ScriptedEngine([sample("The answer is 5."), sample("The answer is 7.")] * 2),
                            MemoryTreeStore())
    searched = job(service)
    tree_id = service.tree_id(searched)
    with service.feeds.listening(tree_id) as queue:
        outcome = await service.run(searched)
        heard = [queue.get_nowait() for _ in range(queue.qsize())]
    assert kinds(heard) == ["start", "progress", "progress", "done"]
    assert heard[0]["question"] == "What is 2 + 3?" and heard[0]["model"] == "tiny"
    assert [len(event["nodes"]) for event in heard[1:3]] == [3, 2]  # the root and two, then two more
    assert heard[-1]["stored"] is True and heard[-1]["answer"] == outcome.result.chosen.answer
    stored = await service.tree_store.get(tree_id)
    assert len(replay(heard[1:3])) == 1 + len(stored["tree"]["root"]["children"])

    late = await service.feeds.follow(tree_id, "key-a", idle_s=5)
    assert [event async for event in late] == heard
    assert await service.feeds.follow(tree_id, "key-b", idle_s=5) is None  # another key's tree
    assert await service.feeds.follow("tree-" + "0" * 24, "key-a", idle_s=5) is None

    with service.feeds.listening(tree_id) as queue:
        again = await service.run(searched)
        assert again.cache_hit and queue.empty()  # answered from the store: nothing ran


@pytest.mark.asyncio
async def test_a_reader_that_joins_mid_search_gets_what_it_missed_then_the_rest():
    service = SearchService(ScriptedEngine([sample("The answer is 5."), sample("The answer is 7.")] * 2,
                                           delay_s=0.05), MemoryTreeStore())
    searched = job(service)
    tree_id = service.tree_id(searched)
    running = asyncio.ensure_future(service.run(searched))
    while not service.feeds.logs.get(tree_id) or len(service.feeds.logs[tree_id].events) < 2:
        await asyncio.sleep(0.01)
    reader = await service.feeds.follow(tree_id, "key-a", idle_s=5)
    followed = [event async for event in reader]
    await running
    assert kinds(followed) == ["start", "progress", "progress", "done"]
    assert followed == service.feeds.logs[tree_id].events


@pytest.mark.asyncio
async def test_a_new_run_on_a_tree_starts_its_feed_anew_and_finished_logs_are_capped():
    feeds = TreeFeeds(MemoryTreeStore(), max_logs=2)
    for tree_id in ("t1", "t2", "t3"):
        feeds.start(tree_id, "", {"strategy": "mcts"})
        feeds.publish(tree_id, {"type": "done"})
    assert list(feeds.logs) == ["t2", "t3"]
    feeds.start("t3", "", {"strategy": "mcts"})
    assert kinds(feeds.logs["t3"].events) == ["start"]
    feeds.publish("t3", {"type": "done"})
    feeds.publish("t3", {"type": "progress"})  # after done: not logged
    assert kinds(feeds.logs["t3"].events) == ["start", "done"]
