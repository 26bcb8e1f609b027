"""P(True) self-evaluation (Kadavath et al. 2022; ALGORITHMS §6).

The model reads the question and a proposed answer and continues "The proposed answer is: (";
P(True) = p(A) / (p(A) + p(B)) from that one next-token distribution. One engine call per
candidate, all issued together so the engine batches them and shares the question's prefix.
"""

from __future__ import annotations

import math

from search.types import Sample, SamplingSpec, ScoringContext

TOP_LOGPROBS = 20
# The answer tokens rarely both fall out of the top 20; when they do, the model said neither.
NO_OPINION = 0.5


def evaluation_messages(question: str, proposed_answer: str) -> list[dict]:
    content = (
        f"Question: {question.strip()}\n"
        f"Proposed Answer: {proposed_answer.strip()}\n"
        "Is the proposed answer:\n"
        " (A) True\n"
        " (B) False"
    )
    return [{"role": "user", "content": content}]


def p_true(next_token: dict[int, float], true_id: int, false_id: int) -> float:
    """p(A) / (p(A) + p(B)), a token absent from the top-k counting as probability 0."""
    logprob_true = next_token.get(true_id, -math.inf)
    logprob_false = next_token.get(false_id, -math.inf)
    if logprob_true == logprob_false == -math.inf:
        return NO_OPINION
    if logprob_false == -math.inf:
        return 1.0
    # A logistic of the difference, which stays accurate for very small probabilities.
    return 1.0 / (1.0 + math.exp(logprob_false - logprob_true))


class PTrueScorer:
    name = "p_true"
    chosen_logprobs = False
    logprobs_needed = None
    full_vocab = False
    token_self_certainty = False

    async def score(self, context: ScoringContext, candidates: list[Sample]) -> list[float]:
        generator = context.generator
        answer_prefix = generator.encode("The proposed answer is: (")
        true_id, false_id = generator.encode("A")[0], generator.encode("B")[0]
        spec = SamplingSpec(n=1, max_tokens=1, temperature=0.0, logprobs=TOP_LOGPROBS)
        requests = [
            (generator.chat_prompt_ids(evaluation_messages(context.question, sample.text))
             + answer_prefix, spec)
            for sample in candidates
        ]
        replies = await generator.generate_many(requests)
        scores = []
        for [reply] in replies:
            next_token = reply.top_logprobs[0] if reply.top_logprobs else {}
            scores.append(p_true(next_token, true_id, false_id))
        return scores
