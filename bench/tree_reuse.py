"""Does a stored tree save work? For each problem, against one deliberate server:

1. a first `mcts` search with `budget_tokens` B,
2. the same request again (answered from the tree store),
3. the same search with budget 2B (continues the stored tree),

and, for engine utilisation, the engine's generated tokens per second during an `mcts` search
without a budget (a tight budget keeps descents waiting on each other's reservations) against a
plain n=32 request (the median of three). Prints tokens and wall time of 2 and 3 as ratios of 1.

    .venv/bin/python -m bench.tree_reuse --limit 5 --budget 400
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import httpx
from tqdm import tqdm

from bench.overhead import ServerProcess, free_port
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


def main(argv: list[str] | None = None) -> None:
    from server.default_model import prepare_default_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--budget", type=int, default=400, help="budget_tokens of the first search")
    parser.add_argument("--parallel", type=int, default=8, help="mcts descents in flight")
    parser.add_argument("--out", type=Path, default=Path("bench/results/tree_reuse.json"))
    args = parser.parse_args(argv)

    port = free_port()
    command = [sys.executable, "-m", "server", "serve", str(prepare_default_model()), "--port", str(port),
               "--served-model-name", "bench-model", *ENGINE_ARGS]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Enough iterations that the budget, not the iteration count, ends the first search.
    spec = {"strategy": "mcts", "k": 3, "iterations": 512, "parallel": args.parallel, "max_depth": 6}
    rows = []
    with ServerProcess("deliberate", command, port, args.out.with_suffix(".log")) as server:
        server.wait_healthy(600)
        plain_rates = []
        for seed in range(PLAIN_REPETITIONS):
            plain, plain_s = chat(server.base_url, "Count from 1 to 50.", None, n=32, temperature=0.7, seed=seed)
            plain_rates.append(plain["usage"]["completion_tokens"] / plain_s)
        plain_rate = statistics.median(plain_rates)
        for problem in tqdm(load_problems(args.data, args.limit), desc="tree reuse", unit="problem"):
            first, first_s = chat(server.base_url, problem["question"], {**spec, "budget_tokens": args.budget})
            again, again_s = chat(server.base_url, problem["question"], {**spec, "budget_tokens": args.budget})
            resumed, resumed_s = chat(server.base_url, problem["question"], {**spec, "budget_tokens": 2 * args.budget})
            unbudgeted, unbudgeted_s = chat(server.base_url, problem["question"],
                                            {**spec, "iterations": 32, "cache": False})
            rows.append({
                "id": problem["id"], "first_tokens": first["usage"]["completion_tokens"], "first_s": first_s,
                "repeat_tokens": again["usage"]["completion_tokens"], "repeat_s": again_s,
                "repeat_cache_hit": again["search"]["cache_hit"],
                "resumed_tokens": resumed["usage"]["completion_tokens"], "resumed_s": resumed_s,
                "first_truncated": first["search"]["truncated"],
                "unbudgeted_tokens": unbudgeted["usage"]["completion_tokens"], "unbudgeted_s": unbudgeted_s,
            })
    first_tokens = sum(r["first_tokens"] for r in rows)
    mcts_rate = sum(r["unbudgeted_tokens"] for r in rows) / sum(r["unbudgeted_s"] for r in rows)
    summary = {
        "budget_tokens": args.budget, "problems": len(rows),
        "repeat_tokens_over_first": sum(r["repeat_tokens"] for r in rows) / first_tokens,
        "repeat_wall_over_first": sum(r["repeat_s"] for r in rows) / sum(r["first_s"] for r in rows),
        "resumed_tokens_over_first": sum(r["resumed_tokens"] for r in rows) / first_tokens,
        "resumed_wall_over_first": sum(r["resumed_s"] for r in rows) / sum(r["first_s"] for r in rows),
        "mcts_tokens_per_s": mcts_rate, "plain_n32_tokens_per_s": plain_rate,
        "mcts_over_plain_n32_tokens_per_s": mcts_rate / plain_rate,
    }
    args.out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2))
    for key, value in summary.items():
        print(f"{key:<34} {value:.3f}" if isinstance(value, float) else f"{key:<34} {value}")


if __name__ == "__main__":
    main()
