import pytest

from search import STRATEGIES, parse_params
from search.best_of_n import BestOfNParams
from search.self_certainty import SelfCertaintyParams
from search.self_consistency import SelfConsistencyParams
from search.types import InvalidSearchParam


@pytest.mark.parametrize("strategy, raw, param", [
    ("best_of_n", {"n": 0}, "search.n"),
    ("best_of_n", {"n": 65}, "search.n"),
    ("best_of_n", {"n": True}, "search.n"),
    ("best_of_n", {"n": "8"}, "search.n"),
    ("best_of_n", {"n": 4.0}, "search.n"),
    ("self_consistency", {"temperature": 2.5}, "search.temperature"),
    ("self_consistency", {"temperature": -0.1}, "search.temperature"),
    ("self_consistency", {"top_p": 0}, "search.top_p"),
    ("self_consistency", {"top_p": 1.01}, "search.top_p"),
    ("self_consistency", {"answer_format": "xml"}, "search.answer_format"),
    ("self_consistency", {"scorer": 3}, "search.scorer"),
    ("self_consistency", {"scorer": ""}, "search.scorer"),
    ("self_consistency", {"adaptive": "yes"}, "search.adaptive"),
    ("self_consistency", {"batch_size": 0}, "search.batch_size"),
    ("self_consistency", {"power": 1.0}, "search.power"),
    ("self_certainty", {"power": -1}, "search.power"),
    ("self_certainty", {"borda": 1}, "search.borda"),
    ("self_agreement", {"selection_max_tokens": 0}, "search.selection_max_tokens"),
    ("best_of_n", {"scorer": None}, "search.scorer"),
    ("best_of_n", {"nn": 4}, "search.nn"),
    ("mcts", {"k": 0}, "search.k"),
    ("mcts", {"iterations": 0}, "search.iterations"),
    ("mcts", {"c_puct": -1}, "search.c_puct"),
    ("mcts", {"c_puct": "1"}, "search.c_puct"),
    ("mcts", {"max_depth": 65}, "search.max_depth"),
    ("mcts", {"parallel": 0}, "search.parallel"),
    ("mcts", {"final": "best"}, "search.final"),
    ("mcts", {"rollout": "yes"}, "search.rollout"),
    ("mcts", {"scorer": None}, "search.scorer"),
    ("mcts", {"step_delimiter": ""}, "search.step_delimiter"),
    ("mcts", {"step_delimiter": 10}, "search.step_delimiter"),
    ("mcts", {"beam_width": 2}, "search.beam_width"),
    ("critic", {"beam_width": 0}, "search.beam_width"),
    ("critic", {"k": 17}, "search.k"),
    ("critic", {"max_steps": 0}, "search.max_steps"),
    ("critic", {"max_revisions": -1}, "search.max_revisions"),
    ("critic", {"accept_threshold": 1.5}, "search.accept_threshold"),
    ("critic", {"step_delimiter": "x" * 33}, "search.step_delimiter"),
    ("critic", {"iterations": 4}, "search.iterations"),
    ("mcts_but_misspelled", {}, "search.strategy"),
    (None, {"n": 4}, "search.strategy"),
])
def test_bad_params_name_the_field(strategy, raw, param):
    with pytest.raises(InvalidSearchParam) as caught:
        parse_params(strategy, raw)
    assert caught.value.param == param
    assert caught.value.message and param in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_defaults():
    params = parse_params(None, {"strategy": "self_certainty"})
    assert isinstance(params, SelfCertaintyParams)
    assert (params.scorer, params.temperature, params.top_p, params.borda) == (
        "self_certainty", 0.3, 1.0, True)
    assert parse_params("best_of_n", {}).scorer == "mean_logprob"
    assert parse_params("mcts", {}).temperature == parse_params("critic", {}).temperature == 0.7
    assert isinstance(parse_params("best_of_n", None), BestOfNParams)


def test_the_argument_names_the_strategy_over_the_raw_key():
    params = parse_params("self_consistency", {"strategy": "ignored", "n": 3, "adaptive": True,
                                               "temperature": 1, "top_p": 1})
    assert isinstance(params, SelfConsistencyParams)
    assert (params.n, params.adaptive) == (3, True)


def test_every_strategy_accepts_the_common_params():
    common = {"n": 2, "temperature": 0.0, "top_p": 0.5, "scorer": "p_true",
              "answer_format": "number"}
    for name in STRATEGIES:
        params = parse_params(name, common)
        assert (params.n, params.scorer, params.answer_format) == (2, "p_true", "number")


def test_a_non_object_is_rejected():
    with pytest.raises(InvalidSearchParam) as caught:
        parse_params("best_of_n", ["n", 3])
    assert caught.value.param == "search"


def test_step_search_defaults():
    mcts = parse_params("mcts", {"k": 2, "final": "vote", "rollout": True})
    assert (mcts.k, mcts.final, mcts.rollout, mcts.scorer, mcts.step_delimiter) == (
        2, "vote", True, "self_certainty", "\n\n")
    critic = parse_params("critic", {"step_delimiter": "\n"})
    assert (critic.beam_width, critic.k, critic.max_steps, critic.max_revisions,
            critic.accept_threshold, critic.step_delimiter) == (2, 2, 8, 1, 0.5, "\n")


def test_errors_quote_at_most_200_characters_of_client_input():
    long = "x" * 5000
    for strategy, raw in ((None, {"strategy": long}), ("best_of_n", {"n": long}), ("best_of_n", {long: 1}),
                          ("mcts", {"step_delimiter": long})):
        with pytest.raises(InvalidSearchParam) as caught:
            parse_params(strategy, raw)
        assert len(str(caught.value)) < 500 and "x" * 201 not in str(caught.value)
