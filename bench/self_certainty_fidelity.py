"""How well do the self-certainty scores the server can get rank candidates, against the exact score?

vLLM returns at most the top-k logprobs per token (k <= 20); the exact self-certainty needs the
whole next-token distribution. This script samples candidates on the real vLLM engine (in
process, top-20 logprobs and the engine's own per-token record from
server/self_certainty_recorder.py), scores each candidate with every estimator of
scorers/self_certainty.py, and computes the exact score by a teacher-forced float32 forward pass
over the full vocabulary with transformers (the route of the paper's own code). It prints the Spearman rank
correlation of each estimate with the exact score, within each problem (what best-of-N
selection depends on) and pooled over all candidates.

    .venv/bin/python -m bench.self_certainty_fidelity --limit 20 --n 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from pathlib import Path

import numpy as np

from bench import embedded_engine_args
from bench.run import DEFAULT_DATA, INSTRUCTION, load_problems
from scorers.self_certainty import SelfCertaintyScorer
from search.types import SamplingSpec

ESTIMATES = ("engine", "tail", "topk", "deepconf")


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rho with average ranks for ties; nan when either side is constant."""
    def ranks(values):
        order = np.argsort(values, kind="stable")
        result = np.empty(len(values))
        sorted_values = np.asarray(values)[order]
        i = 0
        while i < len(values):
            j = i
            while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
                j += 1
            result[order[i:j + 1]] = (i + j) / 2
            i = j + 1
        return result

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def exact_scores(model, prompt_ids: list[int], responses: list[list[int]]) -> list[float]:
    """Mean over response tokens of logsumexp(z) - mean(z) - log V, from full-vocabulary logits."""
    import torch

    scores = []
    for response in responses:
        ids = torch.tensor([prompt_ids + response])
        with torch.no_grad():
            logits = model(ids).logits[0].float()
        # Position t predicts token t+1: the response's predictive positions.
        predictive = logits[len(prompt_ids) - 1: len(prompt_ids) - 1 + len(response)]
        per_token = torch.logsumexp(predictive, -1) - predictive.mean(-1) - math.log(predictive.shape[-1])
        scores.append(float(per_token.mean()) if len(response) else 0.0)
    return scores


async def sample_all(engine_args, problems, n: int, max_tokens: int, temperature: float):
    from server.engine import VLLMGenerator

    generator = VLLMGenerator.start(engine_args)
    try:
        spec = SamplingSpec(n=n, max_tokens=max_tokens, temperature=temperature, logprobs=20, seed=0,
                            token_self_certainty=True)
        if not generator.records_self_certainty:
            raise SystemExit("the engine did not install SelfCertaintyRecorder (speculative decoding?)")
        prompts = [generator.chat_prompt_ids([{"role": "user", "content": f"{p['question']}\n{INSTRUCTION}"}])
                   for p in problems]
        samples = await asyncio.gather(*(generator.generate(ids, spec) for ids in prompts))
        return prompts, samples, generator.vocab_size
    finally:
        generator.shutdown()


def main(argv: list[str] | None = None) -> None:
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)

    engine_args = embedded_engine_args()
    model_dir = engine_args.model
    problems = load_problems(args.data, args.limit)
    prompts, samples, vocab_size = asyncio.run(
        sample_all(engine_args, problems, args.n, args.max_tokens, args.temperature))

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32").eval()
    scorers = {mode: SelfCertaintyScorer(mode) for mode in ESTIMATES}
    within = {mode: [] for mode in ESTIMATES}
    pooled = {mode: [] for mode in ESTIMATES + ("exact",)}
    for prompt_ids, group in tqdm(list(zip(prompts, samples)), desc="exact self-certainty", unit="problem"):
        exact = exact_scores(model, prompt_ids, [s.token_ids for s in group])
        pooled["exact"] += exact
        for mode, scorer in scorers.items():
            estimate = [scorer.response_score(s, vocab_size) for s in group]
            pooled[mode] += estimate
            rho = spearman(estimate, exact)
            if not math.isnan(rho):
                within[mode].append(rho)

    result = {
        "problems": len(problems), "n": args.n, "vocab_size": vocab_size, "top_k": 20,
        "within_problem_mean_spearman": {m: float(np.mean(v)) if v else None for m, v in within.items()},
        "pooled_spearman": {m: spearman(pooled[m], pooled["exact"]) for m in ESTIMATES},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "self_certainty_fidelity.json").write_text(json.dumps(result, indent=2))
    print(f"\nSpearman rank correlation with the exact self-certainty "
          f"({len(problems)} problems x {args.n} candidates, top-20 logprobs):")
    print(f"{'estimate':<10} {'within problem (mean)':>22} {'pooled':>8}")
    for mode in ESTIMATES:
        w = result["within_problem_mean_spearman"][mode]
        print(f"{mode:<10} {w if w is None else round(w, 3)!s:>22} {result['pooled_spearman'][mode]:>8.3f}")


if __name__ == "__main__":
    main()
