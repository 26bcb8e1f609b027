"""Benchmarks: accuracy vs compute (bench.run) and overhead vs vLLM's own server (bench.overhead)."""
