"""Confidence pruning side by side: greedy, self-consistency at n, and the same search with
`search.prune`, in one run against one deliberate server, on a JSONL problem set (bench.run's).

Prints accuracy with a 95% Wilson interval, generated tokens per problem (usage) and their ratio
to the unpruned search, and what pruning reported (samples pruned or stopped at consensus).
Needs a running deliberate server (--base-url).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import time
from pathlib import Path

from openai import AsyncOpenAI

from bench.run import DEFAULT_DATA, GREEDY, INSTRUCTION, load_problems, request_options, run_strategy, summarize

WILSON_Z = 1.96


def wilson(correct: int, total: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a binomial proportion."""
    if total == 0:
        return 0.0, 1.0
    p = correct / total
    centre = (p + WILSON_Z ** 2 / (2 * total)) / (1 + WILSON_Z ** 2 / total)
    half = WILSON_Z * math.sqrt(p * (1 - p) / total + WILSON_Z ** 2 / (4 * total ** 2)) / (1 + WILSON_Z ** 2 / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def pruning_totals(outcomes) -> dict:
    reports = [o.search["pruning"] for o in outcomes if o.search and o.search.get("pruning")]
    keys = ("pruned", "stopped_at_consensus", "not_drawn", "stopped_tokens", "tokens_saved_estimate")
    totals = {key: sum(report[key] for report in reports) for key in keys}
    totals["mean_threshold"] = statistics.fmean(r["threshold"] for r in reports if r["threshold"] is not None) \
        if reports else None
    return totals


async def run_variants(args, variants: dict[str, tuple[str, dict]]) -> list[dict]:
    client = AsyncOpenAI(base_url=args.base_url, api_key=args.api_key, timeout=args.request_timeout, max_retries=0)
    rows = []
    async with client:
        model = args.model or (await client.models.list()).data[0].id
        problems = load_problems(args.data, args.limit)
        for label, (strategy, extra) in variants.items():
            options = request_options(strategy, args, {strategy: extra} if extra else {})
            outcomes, wall_s = await run_strategy(client, model, problems, strategy, options, args)
            row = summarize(label, outcomes, wall_s)
            row["interval_95"] = wilson(row["correct"], row["problems"])
            if extra.get("prune"):
                row["pruning"] = pruning_totals(outcomes)
            rows.append(row)
    return rows


def format_rows(rows: list[dict], reference: str) -> str:
    base = next(row for row in rows if row["strategy"] == reference)["mean_completion_tokens"]
    lines = ["| run | accuracy | 95% interval | tokens/problem | x unpruned | pruned | stopped at consensus | not drawn |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        low, high = row["interval_95"]
        pruning = row.get("pruning") or {}
        tokens = row["mean_completion_tokens"]
        lines.append(f"| {row['strategy']} | {row['accuracy']:.1%} ({row['correct']}/{row['problems']}) | "
                     f"{low:.1%} - {high:.1%} | {tokens:.1f} | {tokens / base:.2f} | "
                     f"{pruning.get('pruned', '-')} | {pruning.get('stopped_at_consensus', '-')} | "
                     f"{pruning.get('not_drawn', '-')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pruning", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", default="EMPTY")
    parser.add_argument("--model")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--prune-json", action="append",
                        help="the search.prune value of a pruned run (repeatable, one run each); default: true")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--request-timeout", type=float, default=1800.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    # What bench.run's request_options reads.
    args.answer_format, args.cache, args.instruction = "number", False, INSTRUCTION
    unpruned = f"self_consistency n={args.n}"
    variants = {GREEDY: (GREEDY, {}), unpruned: ("self_consistency", {})}
    for text in args.prune_json or ["true"]:
        variants[f"{unpruned} prune={text}"] = ("self_consistency", {"prune": json.loads(text)})
    rows = asyncio.run(run_variants(args, variants))
    table = format_rows(rows, unpruned)
    print(table)
    out = args.out or Path("bench/results") / time.strftime("pruning-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    config = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    (out / "results.json").write_text(json.dumps({"config": config, "rows": rows, "table": table}, indent=2))
    print(f"results: {out / 'results.json'}")


if __name__ == "__main__":
    main()
