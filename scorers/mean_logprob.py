"""Mean logprob of the chosen tokens: the log of the length-normalized sequence probability."""

from __future__ import annotations

from search.types import Sample, ScoringContext

# An empty response carries no evidence; rank it below any real one.
EMPTY_RESPONSE_SCORE = -1e9


class MeanLogprobScorer:
    name = "mean_logprob"
    chosen_logprobs = True
    logprobs_needed = None
    full_vocab = False
    token_self_certainty = False

    def response_score(self, sample: Sample) -> float:
        if not sample.token_ids:
            return EMPTY_RESPONSE_SCORE
        if len(sample.logprobs) != len(sample.token_ids):
            raise ValueError("mean_logprob needs the chosen token's logprob at every position")
        return sum(sample.logprobs) / len(sample.logprobs)

    async def score(self, context: ScoringContext, candidates: list[Sample]) -> list[float]:
        return [self.response_score(sample) for sample in candidates]
