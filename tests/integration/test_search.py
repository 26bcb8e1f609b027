"""Every strategy through the HTTP API on the real engine, with the `openai` client's extra_body."""

from __future__ import annotations

import json
import math
import time

import httpx
import openai
import pytest

from tests.conftest import ALIAS, AUTH, MODEL

PROBLEM = [{"role": "user", "content": "Tom has 3 apples and buys 4 more. How many apples does he have? "
                                       'End with "The answer is N."'}]
MAX_TOKENS = 48


def searched(client, search: dict, **kwargs):
    kwargs.setdefault("model", MODEL)
    kwargs.setdefault("messages", PROBLEM)
    kwargs.setdefault("max_tokens", MAX_TOKENS)
    return client.chat.completions.create(extra_body={"search": search}, **kwargs)


@pytest.mark.parametrize("strategy", ["best_of_n", "self_certainty", "self_consistency", "self_agreement"])
def test_each_strategy_answers_with_a_true_report(client, strategy):
    response = searched(client, {"strategy": strategy, "n": 4, "return_trace": True}, seed=11)
    report = response.model_extra["search"]
    assert report["strategy"] == strategy
    assert 1 <= report["candidates"] <= 4
    assert 0 <= report["selected_index"] < report["candidates"]
    text = response.choices[0].message.content
    assert text and report["answer_tokens"] > 0
    # Usage counts every generated token of the search, not just the answer's.
    assert response.usage.completion_tokens >= report["answer_tokens"] * min(report["candidates"], 2)
    assert response.usage.completion_tokens <= 4 * MAX_TOKENS + (256 if strategy == "self_agreement" else 64)
    assert report["engine_calls"] >= 1 and isinstance(report["trace"], list) and report["trace"]
    assert report["truncated"] is False
    if strategy == "self_consistency":
        assert 0 < report["vote_share"] <= 1


@pytest.mark.parametrize("scorer", ["p_true", "p_true_follow_up"])
def test_both_p_true_prompts_value_candidates_through_the_api(client, scorer):
    response = searched(client, {"strategy": "best_of_n", "n": 2, "scorer": scorer, "cache": False}, seed=5)
    report = response.model_extra["search"]
    assert 0.0 <= report["selected_score"] <= 1.0
    # Each candidate's P(True) call generates one token, counted in the usage.
    assert response.usage.completion_tokens >= report["answer_tokens"] + report["candidates"]


def test_budget_tokens_is_a_hard_cap(client):
    response = searched(client, {"strategy": "self_consistency", "n": 8, "budget_tokens": 60})
    assert response.usage.completion_tokens <= 60
    assert response.model_extra["search"]["truncated"] is True


def test_alias_applies_its_search(client):
    response = client.chat.completions.create(model=ALIAS, messages=PROBLEM, max_tokens=32, seed=3)
    report = response.model_extra["search"]
    assert report["strategy"] == "self_consistency" and report["candidates"] == 4


def test_completions_search(client):
    response = client.completions.create(
        model=MODEL, prompt="Question: 2 + 2 = ?\nAnswer:", max_tokens=8,
        extra_body={"search": {"strategy": "best_of_n", "n": 3}})
    assert response.choices[0].text == response.choices[0].text and response.model_extra["search"]["candidates"] == 3


def test_streamed_search_sends_progress_then_answer_then_usage(client):
    stream = searched(client, {"strategy": "self_consistency", "n": 4}, stream=True,
                      stream_options={"include_usage": True}, seed=5)
    chunks = list(stream)
    progress = [c for c in chunks if not c.choices and (c.model_extra or {}).get("search")]
    content = [c for c in chunks if c.choices]
    usage = [c for c in chunks if c.usage is not None]
    assert progress[0].model_extra["search"]["progress"]["candidates"] == 0  # sent at once
    assert progress[-1].model_extra["search"]["progress"]["candidates"] >= 1
    assert chunks.index(progress[-1]) < chunks.index(content[0])
    assert usage and chunks.index(usage[-1]) == len(chunks) - 1
    text = "".join(c.choices[0].delta.content or "" for c in content)
    report = next(c.model_extra["search"] for c in content if (c.model_extra or {}).get("search"))
    assert text and report["candidates"] == 4
    assert usage[-1].usage.completion_tokens >= report["answer_tokens"]


@pytest.mark.parametrize("search, param", [
    ({"strategy": "nope"}, "search.strategy"),
    ({"strategy": "best_of_n", "n": 0}, "search.n"),
    ({"strategy": "best_of_n", "n": 1000}, "search.n"),
    ({"strategy": "best_of_n", "temperature": -1}, "search.temperature"),
    ({"strategy": "best_of_n", "scorer": "astrology"}, "search.scorer"),
    ({"strategy": "best_of_n", "budget_tokens": -5}, "search.budget_tokens"),
    ({"strategy": "best_of_n", "warp_factor": 9}, "search.warp_factor"),
    ({"strategy": "self_consistency", "answer_format": "poem"}, "search.answer_format"),
    ({"strategy": "best_of_n", "scorer": "self_certainty_exact"}, "search.scorer"),
    ({"n": 4}, "search.strategy"),
])
def test_bad_search_parameter_is_400_naming_it(client, search, param):
    with pytest.raises(openai.BadRequestError) as caught:
        searched(client, search)
    assert caught.value.response.json()["error"]["param"] == param


def test_n_with_search_is_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        searched(client, {"strategy": "best_of_n"}, n=2)
    assert caught.value.response.json()["error"]["param"] == "n"


def cancelled_searches(server) -> float:
    for line in httpx.get(f"{server}/metrics").text.splitlines():
        if line.startswith("deliberate_searches_total") and 'outcome="cancelled"' in line:
            return float(line.split()[-1])
    return 0.0


def test_disconnect_cancels_the_search(server):
    before = cancelled_searches(server)
    body = {"model": MODEL, "messages": PROBLEM, "max_tokens": 400, "stream": True,
            "search": {"strategy": "self_consistency", "n": 16}}
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=body, headers=AUTH, timeout=60) as response:
        assert response.status_code == 200
        next(response.iter_lines())  # the search has started; now walk away
    deadline = time.monotonic() + 60
    while cancelled_searches(server) <= before:
        assert time.monotonic() < deadline, "the search was not cancelled after the client left"
        time.sleep(0.5)
    # The engine is free again: a plain request is served at once.
    plain = httpx.post(f"{server}/v1/chat/completions", headers=AUTH, timeout=60,
                       json={"model": MODEL, "messages": PROBLEM, "max_tokens": 4})
    assert plain.status_code == 200 and json.loads(plain.text)["choices"]


def test_self_certainty_is_the_exact_full_vocabulary_score(client):
    """The engine-recorded score of an answer equals KL(uniform || p) averaged over its tokens,
    recomputed here by a float32 forward pass over the whole vocabulary (the engine runs in
    bfloat16, hence the tolerance; the top-20 tail estimate is off by about 1)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from server.default_model import prepare_default_model

    prompt = "Question: Tom has 3 apples and buys 4 more. How many apples does he have?\nAnswer:"
    response = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=16,
        extra_body={"search": {"strategy": "best_of_n", "scorer": "self_certainty", "n": 1,
                               "temperature": 0.0, "cache": False}})
    report, choice = response.model_extra["search"], response.choices[0]

    model_dir = prepare_default_model()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompt_ids = tokenizer.encode(prompt)
    answer_ids = tokenizer.encode(choice.text, add_special_tokens=False)
    if choice.finish_reason == "stop":
        answer_ids.append(tokenizer.eos_token_id)  # generated and scored, though not in the text
    assert len(answer_ids) == response.usage.completion_tokens
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + answer_ids])).logits[0]
    predictive = logits[len(prompt_ids) - 1: len(prompt_ids) - 1 + len(answer_ids)]
    exact = (torch.logsumexp(predictive, -1) - predictive.mean(-1) - math.log(predictive.shape[-1])).mean()
    assert report["selected_score"] == pytest.approx(float(exact), abs=0.1)


def test_reasoning_effort_applies_the_operators_search(client, http):
    medium = client.chat.completions.create(model=MODEL, messages=PROBLEM, max_tokens=12, reasoning_effort="medium")
    assert medium.model_extra["search"]["strategy"] == "self_consistency"
    assert medium.model_extra["search"]["pruning"]["window"] == 16  # pruned, at the defaults
    low = client.chat.completions.create(model=MODEL, messages=PROBLEM, max_tokens=4, reasoning_effort="low")
    assert "search" not in (low.model_extra or {})
    card = next(card for card in http.get("/v1/models").json()["data"] if card["id"] == MODEL)
    assert card["reasoning_effort_searches"]["high"] == {"strategy": "mcts"}
    assert card["reasoning_effort_searches"]["low"] is None


def test_a_deadline_answers_with_what_the_search_has(client):
    response = searched(client, {"strategy": "mcts", "deadline_s": 1.0, "cache": False}, max_tokens=200)
    report = response.model_extra["search"]
    assert report["truncated"] and report["truncated_reason"] == "deadline reached", report
