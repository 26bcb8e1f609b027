"""The search service's plan: which keys of `search` say how to serve it, and how each is checked."""

from types import SimpleNamespace

import pytest

from server.search_schema import SEARCH_SCHEMA
from server.search_service import SERVING_KEYS, SearchRequestError, SearchService, ServingOptions

SERVICE = SearchService(SimpleNamespace(records_self_certainty=True, max_logprobs=20), tree_store=None)


def test_serving_options_go_to_the_plan_not_to_the_strategy():
    tree_id = "tree-" + "a" * 24
    plan = SERVICE.plan({"strategy": "self_consistency", "n": 3, "budget_tokens": 500, "cache": False,
                         "tree_id": tree_id, "return_trace": True}, None)
    assert plan.options == ServingOptions(budget_tokens=500, cache=False, tree_id=tree_id, return_trace=True)
    assert plan.params.n == 3 and not hasattr(plan.params, "budget_tokens")
    assert SERVICE.plan({"strategy": "best_of_n"}, 1).options == ServingOptions()


@pytest.mark.parametrize("search, param", [
    ({"budget_tokens": 0}, "search.budget_tokens"),
    ({"budget_tokens": 2.5}, "search.budget_tokens"),
    ({"budget_tokens": True}, "search.budget_tokens"),
    ({"cache": "yes"}, "search.cache"),
    ({"return_trace": 1}, "search.return_trace"),
    ({"tree_id": "tree-xyz"}, "search.tree_id"),
    ({"tree_id": 7}, "search.tree_id"),
    ({"budget": 7}, "search.budget"),  # not a key of either: named, not ignored
])
def test_a_bad_serving_option_is_a_400_naming_it(search, param):
    with pytest.raises(SearchRequestError) as caught:
        SERVICE.plan({"strategy": "best_of_n", **search}, None)
    assert caught.value.parameter == param


def test_every_strategy_schema_publishes_the_serving_options():
    for variant in SEARCH_SCHEMA["anyOf"]:
        assert SERVING_KEYS <= set(variant["properties"])
        assert variant["properties"]["cache"]["default"] is True
        assert variant["properties"]["budget_tokens"]["minimum"] == 1


def test_the_cost_cap_refuses_what_it_cannot_bound_and_budgets_the_rest():
    capped = SearchService(SimpleNamespace(records_self_certainty=True, max_logprobs=20), tree_store=None,
                           max_search_tokens=4096)
    assert capped.plan({"strategy": "best_of_n", "n": 8}, None, 512).options.budget_tokens == 4096
    assert capped.plan({"strategy": "mcts", "budget_tokens": 100}, None).options.budget_tokens == 100
    with pytest.raises(SearchRequestError) as caught:
        capped.plan({"strategy": "best_of_n", "n": 16}, None, 512)
    assert caught.value.parameter == "search.n" and "--max-search-tokens" in str(caught.value)
    with pytest.raises(SearchRequestError) as caught:
        capped.plan({"strategy": "mcts", "budget_tokens": 5000}, None)
    assert caught.value.parameter == "search.budget_tokens"
    # A budget the client set bounds the search however wide it is.
    assert capped.plan({"strategy": "best_of_n", "n": 64, "budget_tokens": 4000}, None, 2048).options.budget_tokens == 4000
    assert SERVICE.plan({"strategy": "best_of_n", "n": 64}, None, 2048).options.budget_tokens is None


async def test_an_engine_queue_overflow_inside_a_search_stays_vllms_503():
    """vLLM answers 503 when its --max-num-queued-reqs queue is full; a search that meets it mid-way
    must surface that error (vLLM's handler makes it a 503), not a 400 or a 500 of its own."""
    from vllm import SamplingParams
    from vllm.exceptions import QueueOverflowError

    from server.search_service import SearchJob
    from server.tree_store import MemoryTreeStore

    class Overflowing:
        records_self_certainty, max_logprobs, vocab_size, max_model_len, fingerprint = True, 20, 100, 2048, "fp"

        def for_request(self, sampling, request_id):
            return self

        async def generate(self, prompt_ids, spec):
            raise QueueOverflowError()

    service = SearchService(Overflowing(), MemoryTreeStore())
    plan = service.plan({"strategy": "self_consistency", "n": 2, "cache": False}, None)
    job = SearchJob(plan, "q", (1, 2, 3), SamplingParams(max_tokens=8), 8, "req-1")
    with pytest.raises(QueueOverflowError) as caught:
        await service.run(job)
    assert caught.value.http_status == 503
