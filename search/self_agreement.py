"""Self-agreement, "Just Ask One More Time" (Lin et al.; ALGORITHMS §2).

Sample n solutions, then one greedy call in which the model reads them all and writes
"The majority voted answer is ...". That answer maps back to the first candidate whose
extracted answer is equivalent; when the reply cannot be parsed or names no candidate's
answer, the plain majority vote decides. Solutions too long to fit the context together are
shown by their endings, where the final answers are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from search.candidates import CandidatePool
from search.params import CommonParams, bounded
from search.types import BudgetExhausted, Sample, SamplingSpec, SearchContext, SearchResult

# The paper's Table 11 selection instruction. Its opening sentence, step titles and closing
# paragraph are the paper's words; the explanation in step 1 is ours.
SELECTION_INSTRUCTION = (
    "When making a majority vote on multiple corresponding solutions while solely relying on "
    "the final answer of each solution, follow these detailed steps:\n"
    "1. Understand the Question: Read the question carefully to know what is being asked.\n"
    "2. Extract the Final Answers: Extract the final answer for each solution, and then "
    "organize them in a clear list.\n"
    "3. Count the Votes: Tally the number of times each final answer appears.\n"
    "4. Select the Final Answer: Select the final answer with the most votes. If there is a "
    "tie, choose any one of the tied answers.\n"
    "Below is a question and several candidate solutions or one candidate solution. By "
    "considering all these steps above, you can make a majority vote on several corresponding "
    "solutions, and then write \"The majority voted answer is\" in the last line. The majority "
    "voted answer should be one of the final answer sets extracted from several candidate "
    "solutions, not a certain solution."
)

VERDICT = re.compile(r"the majority voted answer is\s*[:\-]?\s*(.*)", re.IGNORECASE)


@dataclass
class SelfAgreementParams(CommonParams):
    n: int = 5
    selection_max_tokens: int = bounded(256, 1, 4096)


def selection_prompt(question: str, solutions: list[str]) -> str:
    listed = "\n\n".join(f"Solution {i}: {text.strip()}" for i, text in enumerate(solutions, 1))
    return f"{SELECTION_INSTRUCTION}\n\nQuestion: {question.strip()}\n\n{listed}"


def parse_verdict(reply: str) -> str | None:
    """The text after the last "The majority voted answer is", up to the end of its line."""
    matches = list(VERDICT.finditer(reply))
    if not matches:
        return None
    verdict = matches[-1].group(1).strip().strip("*").strip()
    return verdict or None


async def run(ctx: SearchContext, params: SelfAgreementParams) -> SearchResult:
    pool = CandidatePool(ctx, "self_agreement")
    try:
        await pool.draw(params.n, params)
        await pool.score()
        if len(pool.groups()) > 1:
            return await ask_one_more_time(ctx, pool, params)
        # With at most one distinct answer the reply could only name it (or fail to parse and
        # fall back to it), so the extra call cannot change the outcome.
        pool.trace.append({"step": "selection", "skipped": "fewer than two distinct answers"})
        index, votes = pool.majority()
        return pool.result(index, votes, "majority (unanimous)")
    except BudgetExhausted as exc:
        pool.stop(exc)
    index, votes = pool.majority()
    return pool.result(index, votes, "majority (selection call not made)")


def fitted_prompt(ctx: SearchContext, solutions: list[Sample], reply_tokens: int) -> list[int]:
    """The selection prompt's token ids, each solution cut to its last tokens as far as needed
    to leave `reply_tokens` of the context for the reply."""
    def prompt_ids(texts: list[str]) -> list[int]:
        content = selection_prompt(ctx.question, texts)
        return ctx.generator.chat_prompt_ids([{"role": "user", "content": content}])

    room = ctx.generator.max_model_len - reply_tokens
    ids = prompt_ids([sample.text for sample in solutions])
    if len(ids) <= room:
        return ids
    tokens = [ctx.generator.encode(sample.text) for sample in solutions]
    share = (room - len(prompt_ids(["..."] * len(solutions)))) // len(solutions)
    while True:  # re-tokenizing a cut text can take a token more; then cut a little deeper
        ids = prompt_ids(["..." + ctx.generator.decode(t[-share:]) if share > 0 else "..." for t in tokens])
        if len(ids) <= room or share <= 0:
            return ids
        share -= (len(ids) - room) // len(solutions) + 1


async def ask_one_more_time(ctx: SearchContext, pool: CandidatePool,
                            params: SelfAgreementParams) -> SearchResult:
    prompt_ids = fitted_prompt(ctx, pool.samples, params.selection_max_tokens)
    spec = SamplingSpec(n=1, max_tokens=params.selection_max_tokens, temperature=0.0)
    [reply] = await ctx.generator.generate(prompt_ids, spec)
    pool.round_done()

    majority_index, votes = pool.majority()
    verdict = parse_verdict(reply.text)
    chosen = None
    if verdict is not None:
        answer = ctx.answers.extract(verdict) or verdict.rstrip(".")
        chosen = next((i for i, candidate_answer in enumerate(pool.answers)
                       if candidate_answer is not None
                       and ctx.answers.equivalent(candidate_answer, answer)), None)
    pool.trace.append({"step": "selection", "reply": reply.text, "verdict": verdict,
                       "matched_index": chosen})
    if chosen is None:
        return pool.result(majority_index, votes, "majority (selection unparseable)")
    return pool.result(chosen, votes, "model selection")
