"""Which selection rule and temperature should the sampling strategies default to?

One sampling pass per temperature on the real engine (in process): for every problem the greedy
answer plus n - 1 samples, each with its engine-recorded self-certainty, mean logprob and
P(True) (in the paper's single prompt, `p_true`, and in a follow-up turn, `p_true_follow_up`).
Every selection rule of the sampling strategies is then applied to the same candidates, so the
rules differ only by how they choose, not by what they were given. Accuracy of each rule is
printed next to greedy decoding, and for each score how often it ranks a right candidate above
a wrong one of the same problem (pairwise AUC; 0.5 is chance). The strategies themselves are
measured through the server by bench/run.py; this script is for choosing their defaults.

    .venv/bin/python -m bench.selection_sweep --temperatures 0.3,0.5,0.7 --n 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from tqdm import tqdm

from bench import embedded_engine_args
from bench.run import DEFAULT_DATA, INSTRUCTION, load_problems
from scorers.answers import MathAnswers, answers_equivalent
from scorers.p_true import PTrueScorer
from search.self_certainty import paper_power
from search.types import MeteredGenerator, SamplingSpec, ScoringContext
from search.voting import borda_weights, group_answers, leader


def choose(answers: list[str | None], scores: list[float] | None, weights: list[float] | None = None,
           prefer_answered: bool = False) -> int:
    """Argmax of scores (ties to the first), or the first member of the heaviest answer."""
    if scores is not None:
        eligible = [i for i, a in enumerate(answers) if a is not None] if prefer_answered else []
        return max(eligible or range(len(answers)), key=lambda i: (scores[i], -i))
    top = leader(group_answers(answers, answers_equivalent, weights))
    return top.members[0] if top else 0


SCORES = ("mean_logprob", "self_certainty", "p_true", "p_true_follow_up")


def rules(answers, mean_logprob, self_certainty, p_true, p_true_follow_up) -> dict[str, int]:
    n = len(answers)
    return {
        "greedy": 0,
        "majority (self_consistency)": choose(answers, None),
        "argmax mean_logprob (best_of_n)": choose(answers, mean_logprob),
        "argmax p_true": choose(answers, p_true),
        "argmax p_true_follow_up": choose(answers, p_true_follow_up),
        "argmax self_certainty": choose(answers, self_certainty, prefer_answered=True),
        "borda self_certainty": choose(answers, None, borda_weights(self_certainty, paper_power(n))),
        "p_true-weighted vote": choose(answers, None, p_true),
        "p_true_follow_up-weighted vote": choose(answers, None, p_true_follow_up),
    }


def pairwise_auc(problems: list[tuple[list[float], list[bool]]]) -> float | None:
    """How often a right candidate scores above a wrong one of the same problem (ties half)."""
    wins = pairs = 0.0
    for scores, right in problems:
        for high in (score for score, ok in zip(scores, right) if ok):
            for low in (score for score, ok in zip(scores, right) if not ok):
                pairs += 1
                wins += 1.0 if high > low else 0.5 if high == low else 0.0
    return wins / pairs if pairs else None


async def sample_problem(generator, extractor, question: str, n: int, temperature: float,
                         max_tokens: int, seed: int):
    prompt = generator.chat_prompt_ids([{"role": "user", "content": f"{question}\n{INSTRUCTION}"}])
    # Every rule is applied to the same samples: mean logprob and self-certainty both ride along.
    greedy = SamplingSpec(n=1, max_tokens=max_tokens, temperature=0.0, token_self_certainty=True,
                          chosen_logprobs=True)
    sampled = SamplingSpec(n=n - 1, max_tokens=max_tokens, temperature=temperature, seed=seed,
                           token_self_certainty=True, chosen_logprobs=True)
    groups = await asyncio.gather(generator.generate(prompt, greedy), generator.generate(prompt, sampled))
    samples = [s for group in groups for s in group]
    context = ScoringContext(prompt, question, MeteredGenerator(generator))
    p_true, p_true_follow_up = await asyncio.gather(
        PTrueScorer().score(context, samples), PTrueScorer(follow_up=True).score(context, samples))
    return {
        "answers": [extractor.extract(s.text) for s in samples],
        "mean_logprob": [sum(s.logprobs) / max(len(s.logprobs), 1) for s in samples],
        "self_certainty": [sum(s.token_self_certainty) / max(len(s.token_self_certainty), 1) for s in samples],
        "p_true": p_true,
        "p_true_follow_up": p_true_follow_up,
    }


async def sweep(args) -> dict:
    from server.engine import VLLMGenerator

    problems = load_problems(args.data, args.limit)
    generator = VLLMGenerator.start(embedded_engine_args())
    extractor = MathAnswers("number")
    slots = asyncio.Semaphore(args.concurrency)
    table: dict[float, dict[str, int]] = {}
    auc: dict[float, dict[str, float | None]] = {}
    try:
        for temperature in args.temperatures:
            progress = tqdm(total=len(problems), desc=f"T={temperature}", unit="q")

            async def one(index: int, problem: dict):
                async with slots:
                    drawn = await sample_problem(generator, extractor, problem["question"], args.n,
                                                 temperature, args.max_tokens, seed=index)
                progress.update()
                gold = str(problem["answer"])
                right = [answer is not None and answers_equivalent(answer, gold) for answer in drawn["answers"]]
                chosen = rules(drawn["answers"], *(drawn[score] for score in SCORES))
                return {rule: right[i] for rule, i in chosen.items()}, drawn, right

            outcomes = await asyncio.gather(*(one(i, p) for i, p in enumerate(problems)))
            progress.close()
            table[temperature] = {rule: sum(o[rule] for o, _, _ in outcomes) for rule in outcomes[0][0]}
            auc[temperature] = {score: pairwise_auc([(drawn[score], right) for _, drawn, right in outcomes])
                                for score in SCORES}
    finally:
        generator.shutdown()
    return {"problems": len(problems), "n": args.n, "correct": table, "pairwise_auc": auc}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--n", type=int, default=8, help="candidates per problem, the greedy one included")
    parser.add_argument("--temperatures", type=lambda text: [float(t) for t in text.split(",")],
                        default=[0.3, 0.5, 0.7])
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("bench/results/selection_sweep.json"))
    args = parser.parse_args(argv)
    result = asyncio.run(sweep(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    temperatures = list(result["correct"])
    rule_names = list(result["correct"][temperatures[0]])
    print(f"\ncorrect of {result['problems']} problems, n={result['n']} (greedy first):")
    print(f"{'rule':<40}" + "".join(f"{'T=' + str(t):>9}" for t in temperatures))
    for rule in rule_names:
        print(f"{rule:<40}" + "".join(f"{result['correct'][t][rule]:>9}" for t in temperatures))
    print("\npairwise AUC, right over wrong candidates of the same problem (0.5 is chance):")
    for score in SCORES:
        aucs = (result["pairwise_auc"][t][score] for t in temperatures)
        print(f"{score:<40}" + "".join(f"{'-' if auc is None else round(auc, 3):>9}" for auc in aucs))


if __name__ == "__main__":
    main()
