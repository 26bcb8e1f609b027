"""Best-of-N by self-certainty, optionally as a Borda vote (Kang, Zhao & Song; ALGORITHMS §1).

Pure mode returns the most self-certain response, preferring responses with an extractable
answer. Borda mode ranks the N responses by score (r = 1 most certain), gives each the vote
weight (N - r + 1) ** power, sums the weights per answer, and returns the first response
carrying the heaviest answer. power 0 is a majority vote; a large power approaches pure mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from search.candidates import WEIGHTED_VOTES, CandidatePool, sample_and_score, select_best_scored
from search.params import PrunableParams, bounded
from search.types import InvalidSearchParam, SearchContext, SearchResult
from search.voting import borda_weights, leader, vote_shares


def paper_power(n: int) -> float:
    """The paper's heuristic: p = 0.3 for N <= 16, p = 1.2 for N >= 32 (and in between)."""
    return 0.3 if n <= 16 else 1.2


@dataclass
class SelfCertaintyParams(PrunableParams):
    scorer: str | dict | None = "self_certainty"
    # The paper samples at 0.6 with top-p 0.9; the dev set's sweep (bench/selection_sweep.py)
    # favours 0.3 and the Borda vote for the embedded model, as for the other votes.
    borda: bool = True
    power: float | None = bounded(None, 0.0, 100.0)  # None: paper_power(n)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scorer is None:
            raise InvalidSearchParam("search.scorer", "self_certainty needs a scorer")


async def run(ctx: SearchContext, params: SelfCertaintyParams) -> SearchResult:
    pool = await sample_and_score(ctx, params, "self_certainty")
    if params.borda and pool.scores is not None and any(a is not None for a in pool.answers):
        power = params.power if params.power is not None else paper_power(len(pool.samples))
        return borda_vote(pool, power)
    return select_best_scored(pool, prefer_answered=True)


def borda_vote(pool: CandidatePool, power: float) -> SearchResult:
    weights = borda_weights(pool.scores, power)
    groups = pool.groups(weights)
    top = leader(groups)
    votes = vote_shares(groups, len(pool.samples), sum(weights))
    pool.trace.append({"step": "borda", "power": power,
                       "tally": {group.answer: group.weight for group in groups}})
    return pool.result(top.members[0], votes, f"borda p={power}", WEIGHTED_VOTES)
