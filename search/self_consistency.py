"""Self-consistency (Wang et al.; ALGORITHMS §3): sample, extract answers, majority vote.

Answers are grouped by the context's equivalence (math, not string equality); the tie-break
is first-seen. Adaptive mode samples `batch_size` at a time and stops as soon as the votes
still to come (n minus those drawn) could not change the winner whichever answers they
carried, so it returns the answer the full vote would, with fewer tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from search.candidates import CandidatePool
from search.params import CommonParams, bounded
from search.types import BudgetExhausted, SearchContext, SearchResult
from search.voting import is_settled


@dataclass
class SelfConsistencyParams(CommonParams):
    adaptive: bool = False
    batch_size: int = bounded(4, 1, 64)


async def run(ctx: SearchContext, params: SelfConsistencyParams) -> SearchResult:
    pool = CandidatePool(ctx, "self_consistency")
    try:
        while len(pool.samples) < params.n:
            left = params.n - len(pool.samples)
            drawn = await pool.draw(min(params.batch_size, left) if params.adaptive else left, params)
            if not drawn:
                break
            remaining = params.n - len(pool.samples)
            if params.adaptive and remaining and is_settled(pool.groups(), remaining):
                pool.trace.append({"step": "early_stop", "samples": len(pool.samples),
                                   "skipped": remaining})
                break
        # A scorer does not change the vote; it only reports each candidate's score.
        await pool.score()
    except BudgetExhausted as exc:
        pool.stop(exc)
    index, votes = pool.majority()
    return pool.result(index, votes, "majority")
