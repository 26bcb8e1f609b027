"""`deliberate serve` flags: vLLM's own engine flags, search specs, and the critic's engine."""

import pytest
from vllm.engine.arg_utils import AsyncEngineArgs

from server.cli import build_parser, critic_engine_args, parse_aliases, parse_search_spec


def serve_args(*flags: str):
    args = build_parser().parse_args(["serve", "/models/actor", *flags])
    args.model = args.model_tag
    return args, AsyncEngineArgs.from_cli_args(args)


def test_the_critic_engine_takes_the_actors_flags_for_its_own_model():
    args, engine = serve_args("--max-model-len", "1024", "--gpu-memory-utilization", "0.45",
                              "--critic-model", "/models/critic")
    critic = critic_engine_args(args, engine)
    assert (critic.model, critic.tokenizer, critic.max_model_len) == ("/models/critic", "/models/critic", 1024)
    assert critic.gpu_memory_utilization == 0.45 and critic.disable_log_stats
    assert engine.model == "/models/actor" and not engine.disable_log_stats


def test_the_critic_can_have_its_own_memory_share():
    args, engine = serve_args("--critic-model", "/models/critic", "--critic-gpu-memory-utilization", "0.3")
    assert critic_engine_args(args, engine).gpu_memory_utilization == 0.3


def test_search_specs_compact_or_json_and_checked():
    assert parse_search_spec("self_consistency,n=8,temperature=0.5", "--alias") == {
        "strategy": "self_consistency", "n": 8, "temperature": 0.5}
    assert parse_aliases(['sc={"strategy": "best_of_n", "n": 4}']) == {"sc": {"strategy": "best_of_n", "n": 4}}
    with pytest.raises(SystemExit, match="search.n"):
        parse_search_spec("best_of_n,n=0", "--alias")


def test_on_a_cpu_unset_engine_flags_get_deliberates_defaults_and_set_ones_stay():
    from server.engine import CPU_BLOCK_SIZE, apply_cpu_defaults

    _, engine = serve_args()
    apply_cpu_defaults(engine)
    assert (engine.block_size, engine.enable_chunked_prefill) == (CPU_BLOCK_SIZE, False)
    _, engine = serve_args("--block-size", "128", "--enable-chunked-prefill")
    apply_cpu_defaults(engine)
    assert (engine.block_size, engine.enable_chunked_prefill) == (128, True)


def test_the_engine_computes_logprobs_only_when_the_search_reads_them():
    from search.types import SamplingSpec
    from server.engine import sampling_params_from_spec

    assert sampling_params_from_spec(SamplingSpec()).logprobs is None
    assert sampling_params_from_spec(SamplingSpec(chosen_logprobs=True)).logprobs == 0
    assert sampling_params_from_spec(SamplingSpec(logprobs=20)).logprobs == 20
    assert sampling_params_from_spec(SamplingSpec(full_vocab_logprobs=True)).logprobs == -1
