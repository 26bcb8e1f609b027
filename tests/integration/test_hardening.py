"""Hostile and heavy input on the real server: a clear 4xx in the OpenAI error shape, never a 500,
and the server serves on afterwards."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.conftest import (
    AUTH, MAX_CONCURRENT_SEARCHES, MAX_QUEUED_SEARCHES, MAX_REQUEST_BYTES, MAX_SEARCH_TOKENS, MODEL, OTHER_API_KEY,
)

CHAT = "/v1/chat/completions"


def chat_body(content="What is 2+2?", **fields) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 4, **fields}


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == status and error["message"]
    if param is not None:
        assert error["param"] == param, error
    return error


def test_a_body_over_the_limit_is_a_413_and_the_server_serves_on(http, server):
    huge = chat_body("word " * (MAX_REQUEST_BYTES // 5 + 10))
    error = assert_error(http.post(CHAT, json=huge), 413)
    assert "--max-request-bytes" in error["message"]
    assert httpx.get(f"{server}/health", timeout=5).status_code == 200
    assert http.post(CHAT, json=chat_body(temperature=0)).status_code == 200


@pytest.mark.parametrize("body, param", [
    (chat_body("\ud800 hello"), "messages[0].content"),
    (chat_body(stop=["\udc00"]), "stop[0]"),
    (chat_body(search={"strategy": "mcts", "step_delimiter": "\ud83d"}), "search.step_delimiter"),
    (chat_body("\ud800", stream=True, search={"strategy": "best_of_n", "n": 2}), "messages[0].content"),
    ({"model": MODEL, "prompt": "a \udfff b", "max_tokens": 2}, "prompt"),
])
def test_a_lone_surrogate_anywhere_is_a_400_naming_it(http, body, param):
    path = "/v1/completions" if "prompt" in body else CHAT
    # As a client's JSON library writes it: the surrogate as a \u escape.
    raw = json.dumps(body).encode()
    assert_error(http.post(path, content=raw, headers={"content-type": "application/json"}), 400, param)
    assert http.post(CHAT, json=chat_body(temperature=0)).status_code == 200


@pytest.mark.parametrize("strategy", [{"name": "mcts"}, ["mcts"], 7, "x" * 5000])
def test_a_strategy_that_is_not_a_name_is_a_400(http, strategy):
    error = assert_error(http.post(CHAT, json=chat_body(search={"strategy": strategy})), 400, "search.strategy")
    assert len(error["message"]) < 500


def test_a_search_over_the_cost_cap_is_a_400_that_says_what_to_do(http):
    wide = chat_body(max_tokens=1024, search={"strategy": "best_of_n", "n": 64})
    error = assert_error(http.post(CHAT, json=wide), 400, "search.n")
    assert "--max-search-tokens" in error["message"] and "budget_tokens" in error["message"]
    over_budget = chat_body(search={"strategy": "mcts", "budget_tokens": MAX_SEARCH_TOKENS + 1})
    assert_error(http.post(CHAT, json=over_budget), 400, "search.budget_tokens")


async def test_searches_past_the_admission_queue_get_429_with_retry_after(server):
    """Each API process runs MAX_CONCURRENT_SEARCHES and queues MAX_QUEUED_SEARCHES; the rest
    are refused at once, and every admitted search still answers."""
    per_process = MAX_CONCURRENT_SEARCHES + MAX_QUEUED_SEARCHES
    sent = 2 * per_process + 16

    async def one(i: int) -> httpx.Response:
        async with httpx.AsyncClient(base_url=server, headers=AUTH, timeout=300) as connection:
            return await connection.post(CHAT, json=chat_body(
                f"Count to {i}.", max_tokens=16, search={"strategy": "best_of_n", "n": 2, "cache": False}))

    responses = await asyncio.gather(*(one(i) for i in range(sent)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 429}, statuses
    assert statuses.count(200) >= per_process and statuses.count(429) >= sent - 2 * per_process, statuses
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert "Retry after" in assert_error(refused, 429)["message"]
    metrics = httpx.get(f"{server}/metrics").text
    assert "deliberate_searches_rejected_total" in metrics and "deliberate_search_queue_depth" in metrics


def test_trees_are_read_and_reused_only_with_the_key_that_grew_them(http, server):
    body = chat_body("Name a color.", max_tokens=6, search={"strategy": "best_of_n", "n": 2})
    grown = http.post(CHAT, json=body).json()["search"]
    assert http.post(CHAT, json=body).json()["search"]["cache_hit"]
    assert http.get(f"/v1/search/trees/{grown['tree_id']}").status_code == 200
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {OTHER_API_KEY}"}, timeout=300) as other:
        assert_error(other.get(f"/v1/search/trees/{grown['tree_id']}"), 404)
        theirs = other.post(CHAT, json=body).json()["search"]
    assert not theirs["cache_hit"] and theirs["tree_id"] != grown["tree_id"]


def test_a_search_logs_one_access_line_under_the_clients_request_id(http, server_log):
    response = http.post(CHAT, json=chat_body(max_tokens=4, search={"strategy": "best_of_n", "n": 2}),
                         headers={"X-Request-Id": "probe-7f3a9c"})
    assert response.status_code == 200 and response.headers["x-request-id"] == "probe-7f3a9c"
    lines = [line for line in server_log.read_text().splitlines()
             if "deliberate.access" in line and "probe-7f3a9c" in line]
    assert len(lines) == 1 and "status=200 strategy=best_of_n" in lines[0], lines


def test_a_client_that_leaves_a_search_is_logged_as_499_not_as_its_fault(server, server_log):
    body = chat_body(max_tokens=300, search={"strategy": "self_consistency", "n": 8, "cache": False})
    with pytest.raises(httpx.ReadTimeout):  # the client gives up waiting and closes its connection
        httpx.post(f"{server}{CHAT}", json=body, timeout=httpx.Timeout(60, read=1.0),
                   headers={**AUTH, "X-Request-Id": "leaves-5d1e"})
    lines: list[str] = []
    for _ in range(120):  # the search is cancelled, then logged
        lines = [line for line in server_log.read_text().splitlines()
                 if "deliberate.access" in line and "leaves-5d1e" in line]
        if lines:
            break
        time.sleep(0.5)
    assert len(lines) == 1 and "status=499 strategy=self_consistency" in lines[0], lines


@pytest.mark.parametrize("path", [CHAT, "/v1/completions", "/tokenize"])
def test_a_body_that_is_not_json_gets_the_openai_error_shape(http, path):
    response = http.post(path, content=b"r\xff\xfem", headers={"content-type": "application/json"})
    assert_error(response, 400)


def test_a_search_over_an_empty_conversation_is_served_as_vllm_serves_it(http):
    """Found by schemathesis: `messages: []` with a search was a 500 (no last user turn)."""
    plain = http.post(CHAT, json={"model": MODEL, "messages": [], "max_tokens": 4})
    searched = http.post(CHAT, json={"model": MODEL, "messages": [], "max_tokens": 4,
                                     "search": {"strategy": "best_of_n", "n": 2}})
    assert searched.status_code == plain.status_code and searched.status_code < 500, searched.text


def test_a_search_over_a_harmony_message_is_served_as_vllm_serves_it(http):
    """Found by schemathesis: a message with `author`/`recipient`/`channel` is parsed into a
    harmony `Message`, not a dict; with a search (here by reasoning_effort) it was a 500."""
    messages = [{"role": "user", "content": "What is 2+3?"},
                {"author": {"role": "assistant"}, "recipient": "", "channel": None,
                 "content": [{"type": "text", "text": "Let me think."}]}]
    plain = http.post(CHAT, json={"model": MODEL, "messages": messages, "max_tokens": 4})
    searched = http.post(CHAT, json={"model": MODEL, "messages": messages, "max_tokens": 4,
                                     "search": {"strategy": "best_of_n", "n": 2}})
    assert searched.status_code == plain.status_code and searched.status_code < 500, searched.text
