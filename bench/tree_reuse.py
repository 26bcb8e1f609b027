"""Does a stored tree save work? For each problem, against one deliberate server:

1. a first `mcts` search with `budget_tokens` B,
2. the same request again (answered from the tree store),
3. the same search with budget 2B (continues the stored tree),

and, for engine utilisation, the engine's generated tokens per second during `mcts` searches of
each of `--iterations` without a budget (a tight budget keeps descents waiting on each other's
reservations) against a plain n=32 request (the median of three), with the prompt tokens the
engine computed (not served from its prefix cache) per generated token and the engine's prefill
rate (on a CPU a computed prompt token costs a good part of a generated one). Prints tokens and wall
time of 2 and 3 as ratios of 1.

    .venv/bin/python -m bench.tree_reuse --limit 4 --budget 300 --iterations 32,128
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from tqdm import tqdm

from bench.overhead import ServerProcess, engine_counters, free_port
from bench.run import DEFAULT_DATA, INSTRUCTION, load_problems

ENGINE_ARGS = ["--max-model-len", "2048", "--enforce-eager", "--dtype", "bfloat16"]
PLAIN_REPETITIONS = 3  # the baseline's tokens/s is their median


def chat(base: str, question: str, search: dict | None, **options) -> tuple[dict, float]:
    body = {"model": "bench-model", "messages": [{"role": "user", "content": f"{question}\n{INSTRUCTION}"}],
            "max_tokens": 256, "seed": 1, **options}
    if search is not None:
        body["search"] = search
    started = time.monotonic()
    response = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=1800)
    response.raise_for_status()
    return response.json(), time.monotonic() - started


def prefilled_tokens(base: str) -> float:
    """Prompt tokens the engine has computed so far: its prompt tokens less prefix-cache hits."""
    counters = engine_counters(base, "vllm:prompt_tokens_total", "vllm:prefix_cache_hits_total")
    return counters["vllm:prompt_tokens_total"] - counters["vllm:prefix_cache_hits_total"]


def engine_run(base: str, question: str, search: dict | None, **options) -> dict:
    """One request with what the engine did for it: generated and computed prompt tokens, seconds."""
    before = prefilled_tokens(base)
    response, seconds = chat(base, question, search, **options)
    return {"tokens": response["usage"]["completion_tokens"], "s": seconds,
            "prefilled": prefilled_tokens(base) - before}


def prefill_rate(base: str, prompts: int = 32, words: int = 200) -> float:
    """Prompt tokens per second the engine computes for `prompts` distinct prompts at once,
    each answered with one token: what a value call's prefill costs next to decoding."""
    rng = random.Random(0)
    vocabulary = "apple river seven green stone cloud table light mouse house".split()
    texts = [" ".join(rng.choice(vocabulary) for _ in range(words)) for _ in range(prompts)]

    def one(text: str) -> int:
        response = httpx.post(f"{base}/v1/completions", timeout=600,
                              json={"model": "bench-model", "prompt": text, "max_tokens": 1})
        response.raise_for_status()
        return response.json()["usage"]["prompt_tokens"]

    started = time.monotonic()
    with ThreadPoolExecutor(prompts) as pool:
        tokens = sum(pool.map(one, texts))
    return tokens / (time.monotonic() - started)


def main(argv: list[str] | None = None) -> None:
    from server.default_model import prepare_default_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--budget", type=int, default=400, help="budget_tokens of the first search")
    parser.add_argument("--parallel", type=int, default=8, help="mcts descents in flight")
    parser.add_argument("--iterations", type=lambda text: [int(n) for n in text.split(",")], default=[32, 128],
                        help="iterations of the unbudgeted searches, comma-separated")
    parser.add_argument("--scorer", help="the scorer valuing mcts's nodes; default: mcts's own")
    parser.add_argument("--out", type=Path, default=Path("bench/results/tree_reuse.json"))
    args = parser.parse_args(argv)

    port = free_port()
    command = [sys.executable, "-m", "server", "serve", str(prepare_default_model()), "--port", str(port),
               "--served-model-name", "bench-model", *ENGINE_ARGS]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Enough iterations that the budget, not the iteration count, ends the first search.
    spec = {"strategy": "mcts", "k": 3, "iterations": 512, "parallel": args.parallel, "max_depth": 6}
    if args.scorer:
        spec["scorer"] = args.scorer
    rows = []
    with ServerProcess("deliberate", command, port, args.out.with_suffix(".log")) as server:
        server.wait_healthy(600)
        prefill_tokens_per_s = prefill_rate(server.base_url)
        plain = [engine_run(server.base_url, "Count from 1 to 50.", None, n=32, temperature=0.7, seed=seed)
                 for seed in range(PLAIN_REPETITIONS)]
        for problem in tqdm(load_problems(args.data, args.limit), desc="tree reuse", unit="problem"):
            first, first_s = chat(server.base_url, problem["question"], {**spec, "budget_tokens": args.budget})
            again, again_s = chat(server.base_url, problem["question"], {**spec, "budget_tokens": args.budget})
            resumed, resumed_s = chat(server.base_url, problem["question"], {**spec, "budget_tokens": 2 * args.budget})
            rows.append({
                "id": problem["id"], "first_tokens": first["usage"]["completion_tokens"], "first_s": first_s,
                "repeat_tokens": again["usage"]["completion_tokens"], "repeat_s": again_s,
                "repeat_cache_hit": again["search"]["cache_hit"],
                "resumed_tokens": resumed["usage"]["completion_tokens"], "resumed_s": resumed_s,
                "first_truncated": first["search"]["truncated"],
                "unbudgeted": {iterations: engine_run(server.base_url, problem["question"],
                                                      {**spec, "iterations": iterations, "cache": False})
                               for iterations in args.iterations},
            })
    first_tokens = sum(r["first_tokens"] for r in rows)
    plain_rate = statistics.median(run["tokens"] / run["s"] for run in plain)
    summary = {
        "budget_tokens": args.budget, "problems": len(rows), "scorer": args.scorer or "mcts default",
        "repeat_tokens_over_first": sum(r["repeat_tokens"] for r in rows) / first_tokens,
        "repeat_wall_over_first": sum(r["repeat_s"] for r in rows) / sum(r["first_s"] for r in rows),
        "resumed_tokens_over_first": sum(r["resumed_tokens"] for r in rows) / first_tokens,
        "resumed_wall_over_first": sum(r["resumed_s"] for r in rows) / sum(r["first_s"] for r in rows),
        "plain_n32_tokens_per_s": plain_rate,
        "prefill_tokens_per_s": prefill_tokens_per_s,
        "plain_n32_prefilled_per_token": sum(run["prefilled"] for run in plain) / sum(run["tokens"] for run in plain),
    }
    for iterations in args.iterations:
        runs = [r["unbudgeted"][iterations] for r in rows]
        rate = sum(run["tokens"] for run in runs) / sum(run["s"] for run in runs)
        summary[f"mcts_{iterations}_tokens_per_s"] = rate
        summary[f"mcts_{iterations}_over_plain_n32_tokens_per_s"] = rate / plain_rate
        summary[f"mcts_{iterations}_prefilled_per_token"] = (sum(run["prefilled"] for run in runs)
                                                            / sum(run["tokens"] for run in runs))
    args.out.write_text(json.dumps({"summary": summary, "plain": plain, "rows": rows}, indent=2))
    for key, value in summary.items():
        print(f"{key:<44} {value:.3f}" if isinstance(value, float) else f"{key:<44} {value}")


if __name__ == "__main__":
    main()
