"""An engine that cannot record self-certainty (speculative decoding) still serves every search."""

from types import SimpleNamespace

import pytest

from server.search_service import SearchService


@pytest.mark.parametrize("search, scorer", [
    ({"strategy": "mcts"}, "p_true"),  # a tree keeps no top-k logprobs to estimate from
    ({"strategy": "mcts", "scorer": "self_certainty"}, "p_true"),
    ({"strategy": "best_of_n", "scorer": "self_certainty"}, "self_certainty_tail"),
    ({"strategy": "mcts", "scorer": "mean_logprob"}, "mean_logprob"),
])
def test_a_self_certainty_scorer_falls_back_when_the_engine_records_none(search, scorer):
    without_recorder = SearchService(SimpleNamespace(records_self_certainty=False, max_logprobs=20), tree_store=None)
    with_recorder = SearchService(SimpleNamespace(records_self_certainty=True, max_logprobs=20), tree_store=None)
    assert without_recorder.plan(search, 1).scorer.name == scorer
    assert with_recorder.plan(search, 1).scorer.name == search.get("scorer", "self_certainty")
