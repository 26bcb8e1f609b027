"""Online confidence pruning on the real engine, through the API: pruned samples are aborted,
reported, and every token they generated is in the usage."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.conftest import AUTH, MODEL

PROBLEM = [{"role": "user", "content": "Ann has 7 pens and buys 5 more. How many pens does she have? "
                                       'Think step by step, then end with "The answer is N."'}]


def engine_metric(server: str, name: str) -> float:
    """The actor engine's vLLM series `name` (its first sample)."""
    for line in httpx.get(f"{server}/metrics").text.splitlines():
        if line.startswith(name + "{"):
            return float(line.split()[-1])
    raise AssertionError(f"no {name} in /metrics")


def generated_tokens(server: str) -> float:
    return engine_metric(server, "vllm:generation_tokens_total")


def engine_goes_idle(server: str, polls: int = 100) -> bool:
    """Whether vLLM's running-request gauge reaches 0 within `polls` tenths of a second."""
    for _ in range(polls):
        if engine_metric(server, "vllm:num_requests_running") == 0:
            return True
        time.sleep(0.1)
    return False


def test_pruned_self_consistency_reports_its_pruned_samples_and_counts_their_tokens(server, client):
    # Threshold at the warm-up's best lowest window: a later sample whose window falls below it
    # is stopped; no consensus stop, so every stop is a confidence prune.
    prune = {"warmup": 2, "percentile": 100, "window": 16, "consensus": 1.0}
    before = generated_tokens(server)
    response = client.chat.completions.create(
        model=MODEL, messages=PROBLEM, max_tokens=96, seed=5,
        extra_body={"search": {"strategy": "self_consistency", "n": 8, "temperature": 1.0, "cache": False,
                               "return_trace": True, "prune": prune}})
    after = generated_tokens(server)
    report = response.model_extra["search"]
    pruning = report["pruning"]

    assert pruning["confidence"] == "self_certainty" and pruning["threshold"] > 0
    assert pruning["pruned"] >= 1 and report["candidates"] + pruning["pruned"] == 8
    [sampled] = [step for step in report["trace"] if step["step"] == "sample" and "pruned_tokens" in step]
    # Stopped after a full window and before its end: the engine request was aborted mid-way.
    assert all(16 <= tokens < 96 for tokens in sampled["pruned_tokens"])
    assert pruning["stopped_tokens"] == sum(sampled["pruned_tokens"])
    # Every token the engine generated for this request, the pruned samples' included, is billed.
    assert response.usage.completion_tokens == after - before
    assert response.choices[0].message.content
    # The pruned samples' engine requests were aborted, not left to run to max_tokens: the
    # running-request gauge is back to 0 and no token was generated after the answer.
    assert engine_goes_idle(server)
    assert generated_tokens(server) == after


def test_pruned_mcts_never_grows_a_pruned_step_and_counts_every_token(server, client):
    # Threshold at the best of the tree's first two steps: most later steps fall below it.
    prune = {"warmup": 2, "percentile": 100, "window": 8}
    before = generated_tokens(server)
    response = client.chat.completions.create(
        model=MODEL, messages=PROBLEM, max_tokens=96, seed=5,
        extra_body={"search": {"strategy": "mcts", "k": 2, "root_k": 4, "iterations": 6, "parallel": 2,
                               "max_depth": 4, "prune": prune}})  # cached: the tree is read back below
    after = generated_tokens(server)
    report = response.model_extra["search"]
    pruning = report["pruning"]

    assert pruning["confidence"] == "self_certainty" and pruning["warmup"] == 2
    assert pruning["pruned"] >= 1 and report["cache_hit"] is False
    tree = httpx.get(f"{server}/v1/search/trees/{report['tree_id']}", headers=AUTH).json()["tree"]
    assert tree["prune_threshold"] == pytest.approx(pruning["threshold"], abs=1e-4)
    stack, pruned = [tree["root"]], []
    while stack:
        node = stack.pop()
        stack.extend(node.get("children", []))
        pruned += [node] if node.get("pruned") else []
    # Never expanded: at most the one greedy completion to the end that answers from it.
    assert len(pruned) == pruning["pruned"]
    assert all(len(node.get("children", [])) <= 1 and all(child.get("terminal") for child in node.get("children", []))
               for node in pruned)
    assert response.usage.completion_tokens == after - before
    assert response.choices[0].message.content


def test_a_bad_prune_setting_is_a_400_naming_it(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=PROBLEM, max_tokens=8,
                                       extra_body={"search": {"strategy": "best_of_n", "prune": {"window": 0}}})
    assert caught.value.response.json()["error"]["param"] == "search.prune.window"
