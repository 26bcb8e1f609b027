"""Benchmarks: accuracy vs compute (bench.run) and overhead vs vLLM's own server (bench.overhead)."""

import os


def embedded_engine_args():
    """Engine flags for the benches that run an engine in-process: the embedded model with
    the Makefile's flags, and a 2 GiB KV cache on a CPU (vLLM's CPU backend otherwise reserves
    most of the machine's memory) unless VLLM_CPU_KVCACHE_SPACE says otherwise."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    from vllm.engine.arg_utils import AsyncEngineArgs

    from server.default_model import prepare_default_model

    return AsyncEngineArgs(model=str(prepare_default_model()), max_model_len=2048, enforce_eager=True,
                           dtype="bfloat16")
