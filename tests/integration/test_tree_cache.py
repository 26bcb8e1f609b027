"""Search trees cached in the server's real Redis: repeats are free, Redis down costs nothing."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from server.tree_store import DEFAULT_RETRY_AFTER_S
from tests.conftest import AUTH, MODEL

PROBLEM = [{"role": "user", "content": "A box has 5 pens and 2 more are added. How many pens? "
                                       'End with "The answer is N."'}]


def search(client, spec: dict, **kwargs):
    return client.chat.completions.create(model=MODEL, messages=PROBLEM, max_tokens=32, seed=21,
                                          extra_body={"search": spec}, **kwargs)


def test_repeated_request_is_served_from_the_tree(server, client):
    spec = {"strategy": "best_of_n", "n": 3, "scorer": "mean_logprob"}
    first = search(client, spec)
    again = search(client, spec)
    first_report, again_report = first.model_extra["search"], again.model_extra["search"]
    assert first_report["tree_id"] == again_report["tree_id"]
    assert again_report["cache_hit"] is True
    assert again.usage.completion_tokens == 0 < first.usage.completion_tokens
    assert again.choices[0].message.content == first.choices[0].message.content
    tree = httpx.get(f"{server}/v1/search/trees/{first_report['tree_id']}", headers=AUTH).json()
    assert tree["id"] == first_report["tree_id"] and len(tree["tree"]["root"]["children"]) == 3
    resumed = search(client, {**spec, "tree_id": first_report["tree_id"]})
    assert resumed.model_extra["search"]["cache_hit"] is True


def test_cache_off_and_foreign_tree_ids(server, client):
    spec = {"strategy": "best_of_n", "n": 2}
    first = search(client, spec)
    uncached = search(client, {**spec, "cache": False})
    assert uncached.model_extra["search"]["cache_hit"] is False and uncached.usage.completion_tokens > 0
    with pytest.raises(openai.BadRequestError) as caught:
        search(client, {"strategy": "best_of_n", "n": 3, "tree_id": first.model_extra["search"]["tree_id"]})
    assert caught.value.response.json()["error"]["param"] == "search.tree_id"
    missing = httpx.get(f"{server}/v1/search/trees/tree-{'0' * 24}", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == 404
    assert httpx.get(f"{server}/v1/search/trees/nonsense", headers=AUTH).status_code == 400


def test_redis_down_searches_still_run_then_cache_again(server, client, server_redis):
    spec = {"strategy": "self_consistency", "n": 2}
    server_redis.stop()
    try:
        down = search(client, spec)
        assert down.choices[0].message.content and down.usage.completion_tokens > 0
        assert down.model_extra["search"]["cache_hit"] is False
        metrics = httpx.get(f"{server}/metrics").text
        assert 'deliberate_tree_cache_errors_total{op="get",store="redis"}' in metrics
    finally:
        server_redis.start()
    # After a failure the store leaves Redis alone for its back-off, then tries it again.
    time.sleep(DEFAULT_RETRY_AFTER_S + 0.5)
    first = search(client, spec)
    again = search(client, spec)
    assert again.model_extra["search"]["cache_hit"] is True and again.usage.completion_tokens == 0
    assert first.choices[0].message.content == again.choices[0].message.content
