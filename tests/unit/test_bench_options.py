"""bench/run.py sends what its flags say, and leaves the rest to the strategies' defaults."""

from bench.run import GREEDY, build_parser, request_options


def options(*flags: str, strategy: str = "self_consistency", extra: dict | None = None) -> dict:
    args = build_parser().parse_args(list(flags))
    return request_options(strategy, args, extra or {})


def test_searches_use_their_own_temperature_unless_one_is_given():
    search = options()["extra_body"]["search"]
    assert search == {"strategy": "self_consistency", "n": 8, "answer_format": "number", "cache": False}
    assert options("--temperature", "0.5")["extra_body"]["search"]["temperature"] == 0.5


def test_greedy_is_plain_and_extra_search_parameters_apply_per_strategy():
    assert options(strategy=GREEDY) == {"temperature": 0.0, "max_tokens": 256}
    search = options("--cache", extra={"self_consistency": {"adaptive": True}})["extra_body"]["search"]
    assert search["adaptive"] is True and "cache" not in search
