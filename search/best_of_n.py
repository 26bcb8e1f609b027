"""Best-of-N: N samples in one engine call, keep the one the scorer rates highest."""

from __future__ import annotations

from dataclasses import dataclass

from search.candidates import sample_and_score, select_best_scored
from search.params import CommonParams
from search.types import InvalidSearchParam, SearchContext, SearchResult


@dataclass
class BestOfNParams(CommonParams):
    # The most likely sample is often a short, degenerate one: by mean logprob best-of-8 lost to
    # greedy at every temperature of the dev-set sweep; by self-certainty it tied it.
    scorer: str | None = "self_certainty"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scorer is None:
            raise InvalidSearchParam("search.scorer", "best_of_n needs a scorer")


async def run(ctx: SearchContext, params: BestOfNParams) -> SearchResult:
    pool = await sample_and_score(ctx, params, "best_of_n")
    return select_best_scored(pool)
