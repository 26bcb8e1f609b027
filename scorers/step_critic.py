"""The default step critic: a model under SPC's critic prompt (ALGORITHMS §5a).

judge: the critic's reply is prefilled up to "<Answer>" and P(Correct) is read from the next
token's logprobs, normalized over Correct and Incorrect as P(True) is; one one-token call per
step, all in one batch. critique: one greedy call per step writing SPC's analysis and critique,
stopped before the verdict.

By default the critic is the actor model, through the request's metered generator. Handed a
generator of its own (another model, e.g. a released SPC-Critic checkpoint, in a
MeteredGenerator sharing the request's Budget), it asks that model instead.
"""

from __future__ import annotations

from typing import Sequence

from scorers.p_true import TOP_LOGPROBS, p_true
from search.types import MeteredGenerator, SamplingSpec, ScoringContext, StepToJudge

# SPC's system prompt, word for word (chen-judge/SPC, eval/infer_batch.py).
SYSTEM_PROMPT = (
    "You are a helpful critic. Given a math Problem, a Partial Solution, the current Last Step "
    "of the solution, You need to provide a critique for the correctness of the Last Step.\n\n"
    "You need to response a step-by-step analysis:\n"
    "1. Analyzing the general thought of the Partial Solution. \n"
    "2. Critique. You should write a brief critique here. This part should also maintain "
    "logical coherence with the summary of the general thought of the Partial Solution.\n"
    "3. Conclusion. At the end of the response, output <Answer>Correct</Answer> or "
    "<Answer>Incorrect</Answer> to represent the correctness of the Last Step."
)
EMPTY_PARTIAL_SOLUTION = "Let's solve this problem."
VERDICT_TAG = "<Answer>"


def critic_messages(question: str, step: StepToJudge) -> list[dict]:
    partial = step.partial.strip() or EMPTY_PARTIAL_SOLUTION
    content = (f"## Problem\n{question.strip()}\n\n## Partial Solution\n{partial}\n\n"
               f"## Last Step\n{step.step.strip()}")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]


class PromptedStepCritic:
    name = "spc"

    def __init__(self, generator: MeteredGenerator | None = None, critique_max_tokens: int = 256):
        self.generator = generator
        self.critique_max_tokens = critique_max_tokens

    def prompts(self, context: ScoringContext, steps: Sequence[StepToJudge]) -> list[list[int]]:
        generator = self.generator or context.generator
        return [generator.chat_prompt_ids(critic_messages(context.question, step)) for step in steps]

    async def judge(self, context: ScoringContext, steps: Sequence[StepToJudge]) -> list[float]:
        generator = self.generator or context.generator
        correct_id, incorrect_id = generator.encode("Correct")[0], generator.encode("Incorrect")[0]
        if correct_id == incorrect_id:
            raise ValueError("this tokenizer starts Correct and Incorrect with the same token")
        tag = generator.encode(VERDICT_TAG)
        spec = SamplingSpec(n=1, max_tokens=1, temperature=0.0, logprobs=TOP_LOGPROBS)
        prompts = self.prompts(context, steps)
        replies = await generator.generate_many([(prompt + tag, spec) for prompt in prompts])
        return [p_true(reply.top_logprobs[0] if reply.top_logprobs else {}, correct_id, incorrect_id)
                for [reply] in replies]

    async def critique(self, context: ScoringContext, steps: Sequence[StepToJudge]) -> list[str]:
        generator = self.generator or context.generator
        spec = SamplingSpec(n=1, max_tokens=self.critique_max_tokens, temperature=0.0, stop=(VERDICT_TAG,))
        replies = await generator.generate_many([(prompt, spec) for prompt in self.prompts(context, steps)])
        return [reply.text.strip() for [reply] in replies]
