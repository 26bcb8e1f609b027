"""MCTS and critic-guided search on the real engine, through the API; MCTS trees resume."""

from __future__ import annotations

import httpx

from tests.conftest import MODEL

PROBLEM = [{"role": "user", "content": "Sam has 6 marbles and loses 2. How many marbles are left? "
                                       'Think step by step, then end with "The answer is N."'}]


def search(client, spec: dict, max_tokens: int = 64):
    return client.chat.completions.create(model=MODEL, messages=PROBLEM, max_tokens=max_tokens, seed=4,
                                          extra_body={"search": spec})


def test_mcts_answers_with_its_tree(server, client):
    response = search(client, {"strategy": "mcts", "k": 2, "iterations": 3, "parallel": 2, "max_depth": 3})
    report = response.model_extra["search"]
    assert report["strategy"] == "mcts" and response.choices[0].message.content
    assert report["engine_calls"] >= 2 and response.usage.completion_tokens >= report["answer_tokens"]
    tree = httpx.get(f"{server}/v1/search/trees/{report['tree_id']}").json()["tree"]
    assert len(tree["root"]["children"]) >= 2


def test_mcts_resumes_with_a_larger_budget(client):
    spec = {"strategy": "mcts", "k": 2, "iterations": 12, "parallel": 2, "max_depth": 4}
    first = search(client, {**spec, "budget_tokens": 40})
    assert first.model_extra["search"]["truncated"] is True
    assert first.usage.completion_tokens <= 40
    resumed = search(client, {**spec, "budget_tokens": 80})
    report = resumed.model_extra["search"]
    assert report["tree_id"] == first.model_extra["search"]["tree_id"] and report["cache_hit"] is False
    # budget_tokens is the tree's total: continuing pays only for what it adds.
    assert 0 < resumed.usage.completion_tokens <= 80 - first.usage.completion_tokens


def actor_generated_tokens(server) -> float:
    """The actor engine's vLLM counter (the critic engine exports no stats)."""
    for line in httpx.get(f"{server}/metrics").text.splitlines():
        if line.startswith("vllm:generation_tokens_total{"):
            return float(line.split()[-1])
    raise AssertionError("no vllm:generation_tokens_total in /metrics")


def test_critic_search_judges_on_the_critic_model(server, client):
    before = actor_generated_tokens(server)
    response = search(client, {"strategy": "critic", "beam_width": 2, "k": 2, "max_steps": 2, "max_revisions": 1,
                               "cache": False}, max_tokens=48)
    report = response.model_extra["search"]
    assert report["strategy"] == "critic" and response.choices[0].message.content
    # Actor proposals plus critic judgements: several engine calls, all counted in the usage...
    assert report["engine_calls"] >= 2
    assert response.usage.completion_tokens > report["answer_tokens"]
    # ...though the judgements ran on the --critic-model engine, not on the actor's.
    assert 0 < actor_generated_tokens(server) - before < response.usage.completion_tokens
