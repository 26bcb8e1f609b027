"""P(True) self-evaluation (Kadavath et al. 2022; ALGORITHMS §6).

The model reads the question and a proposed answer and continues "The proposed answer is: (";
P(True) = p(A) / (p(A) + p(B)) from that one next-token distribution. One engine call per
candidate, all issued together so the engine batches them.

`p_true` asks in the paper's single prompt, with the question and the proposed answer as text.
`p_true_follow_up` asks in a follow-up turn of the conversation the answer was generated in, in
token ids: the prompt and the answer are then a prefix the engine has just computed, and only
the follow-up turn is new to it (bench.tree_reuse: mcts computed 2.16 prompt tokens per
generated token at 128 iterations, against 2.50 with the single prompt). It judged finished answers no worse (bench/selection_sweep.py), but mcts valued
by it solved 4 and 6 of 60 dev problems against 10 with the single prompt (bench/RESULTS.md),
so the single prompt stays the default. A chat template that does not render a conversation as
the continuation of its generation prompt gets the single prompt either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from search.types import Generator, Sample, SamplingSpec, ScoringContext

TOP_LOGPROBS = 20
# The answer tokens rarely both fall out of the top 20; when they do, the model said neither.
NO_OPINION = 0.5
OPTIONS = "Is the proposed answer:\n (A) True\n (B) False"
ANSWER_PREFIX = "The proposed answer is: ("


def evaluation_messages(question: str, proposed_answer: str) -> list[dict]:
    content = f"Question: {question.strip()}\nProposed Answer: {proposed_answer.strip()}\n{OPTIONS}"
    return [{"role": "user", "content": content}]


def follow_up_ids(generator: Generator) -> list[int] | None:
    """The ids that end an answer and ask OPTIONS about it in a user turn of their own, up to
    ANSWER_PREFIX; None when the chat template renders an answer otherwise than as the tokens
    after its generation prompt (some templates drop or rewrite earlier assistant turns)."""
    question = [{"role": "user", "content": "What is 2 + 3?"}]
    answer = "2 + 3 = 5."
    asked = generator.chat_prompt_ids(question) + generator.encode(answer)
    followed = generator.chat_prompt_ids(
        [*question, {"role": "assistant", "content": answer}, {"role": "user", "content": OPTIONS}])
    if followed[:len(asked)] != asked:
        return None
    return followed[len(asked):] + generator.encode(ANSWER_PREFIX)


def join_turn(answer_ids: Sequence[int], follow_up: list[int]) -> list[int]:
    """answer + follow-up, without repeating the end-of-turn token an answer that stopped on
    its own already carries."""
    overlap = next((k for k in range(min(len(answer_ids), len(follow_up)), 0, -1)
                    if list(answer_ids[-k:]) == follow_up[:k]), 0)
    return [*answer_ids, *follow_up[overlap:]]


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


@dataclass(frozen=True)
class PromptParts:
    """The ids of P(True)'s constant strings under one tokenizer."""

    true_id: int
    false_id: int
    answer_prefix: list[int]
    follow_up: list[int] | None  # None: the single prompt


class PTrueScorer:
    """Built per request (SCORERS[name]()), so it sees one tokenizer: the ids of its constant
    strings, the follow-up turn included, are worked out on its first call, not on every node."""

    chosen_logprobs = False
    logprobs_needed = None
    full_vocab = False
    token_self_certainty = False

    def __init__(self, follow_up: bool = False):
        self.follow_up = follow_up
        self.name = "p_true_follow_up" if follow_up else "p_true"
        self.parts: PromptParts | None = None

    def prompt_parts(self, generator: Generator) -> PromptParts:
        if self.parts is None:
            self.parts = PromptParts(generator.encode("A")[0], generator.encode("B")[0],
                                     generator.encode(ANSWER_PREFIX),
                                     follow_up_ids(generator) if self.follow_up else None)
        return self.parts

    def prompts(self, context: ScoringContext, candidates: list[Sample]) -> list[list[int]]:
        parts = self.prompt_parts(context.generator)
        if parts.follow_up is not None:
            return [join_turn(context.prompt_ids + list(sample.token_ids), parts.follow_up)
                    for sample in candidates]
        return [context.generator.chat_prompt_ids(evaluation_messages(context.question, sample.text))
                + parts.answer_prefix for sample in candidates]

    async def score(self, context: ScoringContext, candidates: list[Sample]) -> list[float]:
        spec = SamplingSpec(n=1, max_tokens=1, temperature=0.0, logprobs=TOP_LOGPROBS)
        prompts = self.prompts(context, candidates)
        parts = self.prompt_parts(context.generator)
        replies = await context.generator.generate_many([(prompt, spec) for prompt in prompts])
        scores = []
        for [reply] in replies:
            next_token = reply.top_logprobs[0] if reply.top_logprobs else {}
            scores.append(p_true(next_token, parts.true_id, parts.false_id))
        return scores
