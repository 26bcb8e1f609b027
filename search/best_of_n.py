"""Best-of-N: N samples in one engine call, keep the one the scorer rates highest."""

from __future__ import annotations

from dataclasses import dataclass

from search.candidates import sample_and_score, select_best_scored
from search.params import PrunableParams
from search.types import InvalidSearchParam, SearchContext, SearchResult


@dataclass
class BestOfNParams(PrunableParams):
    # On the dev set no single score picks out the right answer for the embedded model (argmax
    # by mean logprob, self-certainty or P(True) all stay at or below greedy, within noise of
    # each other); mean logprob costs nothing beyond the samples, while the recorded
    # self-certainty fans n out into n one-sample requests.
    scorer: str | dict | None = "mean_logprob"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scorer is None:
            raise InvalidSearchParam("search.scorer", "best_of_n needs a scorer")


async def run(ctx: SearchContext, params: BestOfNParams) -> SearchResult:
    pool = await sample_and_score(ctx, params, "best_of_n")
    return select_best_scored(pool)
