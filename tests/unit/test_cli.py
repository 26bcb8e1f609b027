"""`deliberate serve` is `vllm serve` with deliberate's flags: vLLM's own parser, search specs
checked at start, the recorder and the plugin enabled, and CPU defaults only where unset."""

import argparse

import pytest

from server.cli import build_parser, plugins_with_deliberate
from server.plugin import (
    RECORDER, DeliberateState, critic_engine_args, deliberate_args, parse_aliases, parse_effort_searches,
    parse_search_spec, records_self_certainty,
)


def serve_args(*flags: str):
    return build_parser().parse_args(["serve", "/models/actor", *flags])


def test_every_vllm_serve_flag_parses_beside_deliberates():
    args = serve_args("--api-key", "k", "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
                      "--api-server-count", "2", "--max-model-len", "1024", "--alias", "sc=self_consistency,n=4",
                      "--redis-url", "redis://127.0.0.1:1/0")
    assert (args.api_key, args.tool_call_parser, args.api_server_count, args.max_model_len) == (["k"], "hermes", 2, 1024)
    assert args.alias == ["sc=self_consistency,n=4"] and args.redis_url == "redis://127.0.0.1:1/0"
    assert deliberate_args(args) is args


def test_under_plain_vllm_serve_the_flags_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("DELIBERATE_ARGS", "--alias sc=self_consistency,n=4 --tree-cache-ttl 60")
    options = deliberate_args(argparse.Namespace(model="m"))
    assert options.alias == ["sc=self_consistency,n=4"] and options.tree_cache_ttl == 60


def test_the_critic_engine_takes_the_actors_flags_for_its_own_model():
    args = serve_args("--max-model-len", "1024", "--gpu-memory-utilization", "0.45", "--critic-model", "/models/critic")
    args.model = args.model_tag
    critic = critic_engine_args(args, args)
    assert (critic.model, critic.tokenizer, critic.max_model_len) == ("/models/critic", "/models/critic", 1024)
    assert critic.gpu_memory_utilization == 0.45 and critic.disable_log_stats


def test_the_critic_can_have_its_own_memory_share():
    args = serve_args("--critic-model", "/models/critic", "--critic-gpu-memory-utilization", "0.3")
    args.model = args.model_tag
    assert critic_engine_args(args, args).gpu_memory_utilization == 0.3


def test_search_specs_compact_or_json_and_checked():
    assert parse_search_spec("self_consistency,n=8,temperature=0.5", "--alias") == {
        "strategy": "self_consistency", "n": 8, "temperature": 0.5}
    assert parse_aliases(['sc={"strategy": "best_of_n", "n": 4}']) == {"sc": {"strategy": "best_of_n", "n": 4}}
    assert parse_search_spec("mcts,budget_tokens=2000,cache=false", "--alias") == {
        "strategy": "mcts", "budget_tokens": 2000, "cache": False}
    with pytest.raises(SystemExit, match="search.n"):
        parse_search_spec("best_of_n,n=0", "--alias")
    with pytest.raises(SystemExit, match="search.budget_tokens"):
        parse_search_spec("best_of_n,budget_tokens=0", "--alias")


def test_the_plugin_is_enabled_beside_the_general_plugins_vllm_would_load():
    assert plugins_with_deliberate("a,b") == "a,b,deliberate"
    assert plugins_with_deliberate("deliberate") == "deliberate"
    assert plugins_with_deliberate(None).split(",")[-1] == "deliberate"


def test_self_certainty_is_recorded_only_with_the_recorder_and_without_speculation():
    assert records_self_certainty(argparse.Namespace(logits_processors=[RECORDER], speculative_config=None))
    assert not records_self_certainty(argparse.Namespace(logits_processors=None, speculative_config=None))
    assert not records_self_certainty(argparse.Namespace(logits_processors=[RECORDER], speculative_config={"m": 1}))


def test_on_a_cpu_unset_engine_flags_get_deliberates_defaults_and_set_ones_stay():
    from server.engine import CPU_BLOCK_SIZE, apply_cpu_defaults

    args = serve_args()
    apply_cpu_defaults(args)
    assert (args.block_size, args.enable_chunked_prefill) == (CPU_BLOCK_SIZE, False)
    args = serve_args("--block-size", "128", "--enable-chunked-prefill")
    apply_cpu_defaults(args)
    assert (args.block_size, args.enable_chunked_prefill) == (128, True)


def test_the_engine_computes_logprobs_only_when_the_search_reads_them():
    from search.types import SamplingSpec
    from server.engine import sampling_params_from_spec

    assert sampling_params_from_spec(SamplingSpec()).logprobs is None
    assert sampling_params_from_spec(SamplingSpec(chosen_logprobs=True)).logprobs == 0
    assert sampling_params_from_spec(SamplingSpec(logprobs=20)).logprobs == 20
    assert sampling_params_from_spec(SamplingSpec(full_vocab_logprobs=True)).logprobs == -1


def test_answer_samples_keep_the_requests_constraints_and_the_search_sets_its_own():
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    from search.types import SamplingSpec
    from server.engine import sampling_params_from_spec

    request = SamplingParams(n=1, temperature=0.2, max_tokens=99, logit_bias={7: -100.0}, stop_token_ids=[5],
                             structured_outputs=StructuredOutputsParams(json={"type": "object"}), seed=3)
    spec = SamplingSpec(n=4, max_tokens=30, temperature=0.8, seed=11, stop=("\n\n",), answer=True)
    answer = sampling_params_from_spec(spec, request)
    assert (answer.n, answer.max_tokens, answer.temperature, answer.seed, answer.stop) == (4, 30, 0.8, 11, ["\n\n"])
    assert answer.logit_bias == {7: -100.0} and answer.stop_token_ids == [5]
    assert answer.structured_outputs.json == {"type": "object"}
    judge = sampling_params_from_spec(SamplingSpec(n=1, max_tokens=1, temperature=0.0), request)
    assert judge.logit_bias is None and judge.structured_outputs is None and judge.stop_token_ids == []


def test_reasoning_effort_chooses_a_search_from_the_operators_table():
    table = parse_effort_searches(["high=best_of_n,n=4", "xhigh=mcts,iterations=8"])
    assert table["low"] is None and table["medium"]["strategy"] == "self_consistency"
    assert table["high"] == {"strategy": "best_of_n", "n": 4} and table["xhigh"]["iterations"] == 8
    with pytest.raises(SystemExit, match="LEVEL"):
        parse_effort_searches(["extreme=mcts"])
    state = DeliberateState(None, None, "m", {"m-sc": {"strategy": "self_consistency", "n": 4}},
                            {"strategy": "best_of_n"}, None, None, table)
    assert state.effective_search("m", None, "high") == {"strategy": "best_of_n", "n": 4}
    assert state.effective_search("m", None, "low") is None  # plain, over the default search
    assert state.effective_search("m", None, None) == {"strategy": "best_of_n"}
    assert state.effective_search("m-sc", None, "high") == {"strategy": "self_consistency", "n": 4}  # alias first
    assert state.effective_search("m", {"n": 2}, "high") == {"strategy": "best_of_n", "n": 2}
    assert state.effective_search("m", {"strategy": "mcts"}, "medium") == {"strategy": "mcts"}


@pytest.mark.parametrize("flags, named", [
    (("--headless",), "--headless"),
    (("--nnodes", "2", "--node-rank", "0", "--tensor-parallel-size", "2"), "--nnodes 2"),
    (("--distributed-executor-backend", "ray", "--pipeline-parallel-size", "2"), "--distributed-executor-backend ray"),
    (("--data-parallel-size", "4", "--data-parallel-size-local", "2"), "--data-parallel-size-local 2 of 4"),
    (("--data-parallel-size", "2", "--data-parallel-backend", "ray"), "--data-parallel-backend ray"),
])
def test_where_the_sampler_may_be_on_another_machine_the_recorder_is_off(flags, named, monkeypatch, caplog):
    """The recorder's files lie in the sampler's shared memory: an API server elsewhere would wait
    for records that never come, so deliberate serve leaves it out and says why."""
    import logging

    from server import cli

    monkeypatch.setattr("server.default_model.prepare_default_model", lambda: "/models/default")
    args = serve_args(*flags)
    with caplog.at_level(logging.WARNING, logger="deliberate"):
        monkeypatch.setattr("server.plugin.log.propagate", True)
        cli.prepare_serve_args(args)
    assert RECORDER not in (args.logits_processors or [])
    assert f"self-certainty recorder off: {named}" in caplog.text
    # Named by hand under a plain `vllm serve`, the API server still does not ask for records.
    args.logits_processors = [RECORDER]
    assert not records_self_certainty(args)


@pytest.mark.parametrize("flags", [
    (),
    ("--tensor-parallel-size", "2", "--pipeline-parallel-size", "2"),  # multiprocessing, one node
    ("--distributed-executor-backend", "ray",),  # one worker: the engine core's own node
    ("--data-parallel-size", "2",),
    ("--data-parallel-size", "4", "--data-parallel-size-local", "2", "--data-parallel-start-rank", "2"),  # hybrid
    ("--data-parallel-size", "2", "--data-parallel-rank", "1"),  # external load balancer
    ("--api-server-count", "2",),
])
def test_where_sampler_and_api_server_share_a_machine_the_recorder_is_on(flags, monkeypatch):
    from server import cli

    monkeypatch.setattr("server.default_model.prepare_default_model", lambda: "/models/default")
    args = serve_args(*flags)
    cli.prepare_serve_args(args)
    assert RECORDER in args.logits_processors and records_self_certainty(args)
