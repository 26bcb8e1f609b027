"""Which finished path should mcts answer with? Every final rule applied to the same trees.

Runs `mcts` on the dev set through a running server (the tree cache on, so each search's tree
can be fetched from `GET /v1/search/trees/{id}`; a seed of the run's own keeps earlier runs'
trees out of it), then applies to each tree's finished paths
mcts's final rules and two votes: how many problems had a right finished path at all (the
oracle), how many each rule answers right, and how often the value ranks a right finished path
above a wrong one of the same problem (pairwise AUC; 0.5 is chance). Search quality is what the
oracle measures; judgement is what separates the rules from it.

    .venv/bin/python -m bench.mcts_rules --base-url http://127.0.0.1:8000/v1
    .venv/bin/python -m bench.mcts_rules --search-json '{"scorer": "p_true"}'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from pathlib import Path

import httpx
from tqdm import tqdm

from bench.run import DEFAULT_DATA, INSTRUCTION, load_problems
from bench.selection_sweep import pairwise_auc
from scorers.answers import answers_equivalent
from search.mcts import FINAL_RULES, choose
from search.self_certainty import paper_power
from search.tree import Node, Tree
from search.voting import borda_weights, group_answers, leader


def vote(terminals: list[Node], weights: list[float]) -> Node | None:
    top = leader(group_answers([node.answer for node in terminals], answers_equivalent, weights))
    return None if top is None else terminals[top.members[0]]


def picks(terminals: list[Node]) -> dict[str, Node | None]:
    chosen = {rule: choose(terminals, rule, answers_equivalent) for rule in FINAL_RULES}
    scores = [node.score if node.score is not None else 0.0 for node in terminals]
    chosen["majority"] = vote(terminals, [1.0] * len(terminals))
    chosen["borda"] = vote(terminals, borda_weights(scores, paper_power(len(terminals))))
    return chosen


async def search_tree(client: httpx.AsyncClient, args: argparse.Namespace, question: str) -> dict:
    body = {"model": args.model, "max_tokens": args.max_tokens, "seed": args.seed,
            "messages": [{"role": "user", "content": f"{question}\n{INSTRUCTION}"}],
            "search": {"strategy": "mcts", "answer_format": "number", **args.search_json}}
    reply = (await client.post(f"{args.base_url}/chat/completions", json=body)).raise_for_status().json()
    stored = await client.get(f"{args.base_url}/search/trees/{reply['search']['tree_id']}")
    return stored.raise_for_status().json()["tree"]


async def collect(args: argparse.Namespace, problems: list[dict]) -> list[dict]:
    slots = asyncio.Semaphore(args.concurrency)
    progress = tqdm(total=len(problems), desc="mcts", unit="q")
    async with httpx.AsyncClient(timeout=1800) as client:
        if args.model is None:
            args.model = (await client.get(f"{args.base_url}/models")).json()["data"][0]["id"]

        async def one(problem: dict) -> dict:
            async with slots:
                tree = await search_tree(client, args, problem["question"])
            progress.update()
            return tree

        trees = await asyncio.gather(*(one(problem) for problem in problems))
    progress.close()
    return trees


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", help="default: the first one /v1/models lists")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=random.randrange(2**31), help="default: a new one per run")
    parser.add_argument("--search-json", type=json.loads, default={}, help="mcts parameters, as JSON")
    parser.add_argument("--out", type=Path, default=Path("bench/results/mcts_rules.json"))
    args = parser.parse_args(argv)

    problems = load_problems(args.data, args.limit)
    trees = asyncio.run(collect(args, problems))
    correct = {"oracle": 0}
    valued: list[tuple[list[float], list[bool]]] = []  # per problem, for the value's AUC
    finished = 0
    for problem, tree in zip(problems, trees):
        terminals = [node for node in Tree.from_dict(tree).nodes() if node.terminal]
        right = [node.answer is not None and answers_equivalent(node.answer, str(problem["answer"]))
                 for node in terminals]
        finished += len(terminals)
        correct["oracle"] += any(right)
        for rule, node in (picks(terminals) if terminals else {}).items():
            correct[rule] = correct.get(rule, 0) + (node is not None and right[terminals.index(node)])
        scored = [(node.score, ok) for node, ok in zip(terminals, right) if node.score is not None]
        valued.append(([score for score, _ in scored], [ok for _, ok in scored]))
    summary = {"problems": len(problems), "search": args.search_json, "seed": args.seed,
               "finished_paths_per_problem": finished / len(problems),
               "correct": correct, "value_pairwise_auc": pairwise_auc(valued)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "trees": trees}))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
