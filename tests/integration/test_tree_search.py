"""MCTS and critic-guided search on the real engine, through the API; MCTS trees resume."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import AUTH, MODEL

PROBLEM = [{"role": "user", "content": "Sam has 6 marbles and loses 2. How many marbles are left? "
                                       'Think step by step, then end with "The answer is N."'}]


def search(client, spec: dict, max_tokens: int = 64):
    return client.chat.completions.create(model=MODEL, messages=PROBLEM, max_tokens=max_tokens, seed=4,
                                          extra_body={"search": spec})


def test_mcts_valued_by_p_true_answers_with_its_tree(server, client):
    response = search(client, {"strategy": "mcts", "scorer": "p_true", "k": 2, "iterations": 3, "parallel": 2,
                               "max_depth": 3})
    report = response.model_extra["search"]
    assert report["strategy"] == "mcts" and response.choices[0].message.content
    assert report["engine_calls"] >= 2 and response.usage.completion_tokens >= report["answer_tokens"]
    tree = httpx.get(f"{server}/v1/search/trees/{report['tree_id']}", headers=AUTH).json()["tree"]
    assert len(tree["root"]["children"]) >= 2
    assert all(0 <= child["score"] <= 1 and "sc" not in child for child in tree["root"]["children"])


def test_mcts_values_steps_by_the_self_certainty_the_engine_recorded_by_default(server, client):
    response = search(client, {"strategy": "mcts", "k": 2, "root_k": 2, "iterations": 3, "parallel": 2,
                               "max_depth": 3})
    report = response.model_extra["search"]
    assert report["selected_score"] > 0 and response.choices[0].message.content
    tree = httpx.get(f"{server}/v1/search/trees/{report['tree_id']}", headers=AUTH).json()["tree"]

    def valued_paths(node: dict, recorded: list[float]):
        for child in node.get("children", []):
            path = recorded + child["sc"]
            assert 0 < len(child["sc"]) <= len(child["ids"])  # a delimiter the search appended has none
            if "score" in child:
                yield child["score"], sum(path) / len(path)
            yield from valued_paths(child, path)

    pairs = list(valued_paths(tree["root"], []))
    assert len(pairs) >= 2 and all(score == pytest.approx(mean) and score > 0 for score, mean in pairs)


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


def test_p_true_asks_in_a_follow_up_turn_under_the_default_models_template(server):
    """The P(True) value continues the conversation the path was generated in, so its prefill
    is the follow-up turn alone; a template that broke the probe would fall back silently."""
    from transformers import AutoTokenizer

    from scorers.p_true import follow_up_ids, join_turn
    from server.default_model import prepare_default_model
    from server.engine import VLLMGenerator

    class Tokenizing:  # the engine adapter's own template and tokenizer calls, without an engine
        chat_prompt_ids, encode = VLLMGenerator.chat_prompt_ids, VLLMGenerator.encode

        def __init__(self, tokenizer):
            self.tokenizer = tokenizer

    generator = Tokenizing(AutoTokenizer.from_pretrained(prepare_default_model()))
    follow_up = follow_up_ids(generator)
    assert generator.tokenizer.decode(follow_up) == (
        "<|im_end|>\n<|im_start|>user\nIs the proposed answer:\n (A) True\n (B) False<|im_end|>\n"
        "<|im_start|>assistant\nThe proposed answer is: (")
    # An answer that ended its turn itself is not ended twice.
    answer = generator.encode("The answer is 4.") + [generator.tokenizer.eos_token_id]
    assert join_turn(answer, follow_up) == answer + follow_up[1:]
