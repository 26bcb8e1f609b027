"""Self-consistency (Wang et al.; ALGORITHMS §3): sample, extract answers, majority vote.

Answers are grouped by the context's equivalence (math, not string equality); the tie-break
is first-seen. Adaptive mode samples `batch_size` at a time and stops as soon as the votes
still to come (n minus those drawn) could not change the winner whichever answers they
carried, so it returns the answer the full vote would, with fewer tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from search.candidates import CandidatePool
from search.params import PrunableParams, bounded
from search.types import BudgetExhausted, InvalidSearchParam, SearchContext, SearchResult
from search.voting import is_settled


@dataclass
class SelfConsistencyParams(PrunableParams):
    adaptive: bool = False
    batch_size: int = bounded(4, 1, 64)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.adaptive and self.prune is not None:
            raise InvalidSearchParam("search.adaptive", "prune stops the vote itself (prune.consensus); "
                                                        "ask for one of adaptive and prune")


async def run(ctx: SearchContext, params: SelfConsistencyParams) -> SearchResult:
    pool = CandidatePool(ctx, "self_consistency")
    try:
        if params.prune is not None:
            await pool.draw_pruned(params.n, params, params.prune)
        else:
            await draw_votes(pool, params)
        # A scorer does not change the vote; it only reports each candidate's score.
        await pool.score()
    except BudgetExhausted as exc:
        pool.stop(exc)
    if pool.pruning is not None:
        return pool.confidence_vote()
    index, votes = pool.majority()
    return pool.result(index, votes, "majority")


async def draw_votes(pool: CandidatePool, params: SelfConsistencyParams) -> None:
    """All n samples in one call, or adaptively `batch_size` at a time until the vote is settled."""
    while len(pool.samples) < params.n:
        left = params.n - len(pool.samples)
        drawn = await pool.draw(min(params.batch_size, left) if params.adaptive else left, params)
        if not drawn:
            break
        remaining = params.n - len(pool.samples)
        if params.adaptive and remaining and is_settled(pool.groups(), remaining):
            pool.trace.append({"step": "early_stop", "samples": len(pool.samples), "skipped": remaining})
            break
