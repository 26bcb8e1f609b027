"""Self-certainty (Kang, Zhao & Song; ALGORITHMS §1): mean over response tokens of
KL(uniform || p_i) = logsumexp(z_i) - mean_j(z_ij) - log V.

The server's engine computes the exact token score beside sampling (server/
self_certainty_recorder.py); without that it returns only the top-k logprobs per token unless
asked for the whole vocabulary. So the token score has five sources, selectable to measure
them against each other:

- "engine" (the default): the exact value the engine recorded for each token, at no extra
  generation cost.
- "exact": the formula over every vocabulary entry (needs full-vocabulary logprobs).
- "topk": the same formula over the top-k slice, as if it were the vocabulary:
  0 when the head is flat, a large value when one token dominates it, exact when k = V.
- "tail" (the fallback when the engine cannot record, e.g. under speculative decoding: of the
  top-k estimates it ranks closest to "exact" on our dev set, Spearman 0.76 vs 0.69 for
  "topk" and 0.68 for "deepconf"): uniform-tail completion: the top-k as given and the remaining mass R spread evenly
  over the other V - k tokens. A lower bound on the exact score, close to -log R.
- "deepconf": DeepConf's token confidence, the mean negative logprob of the top k.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from search.types import Sample, ScoringContext

log = logging.getLogger("deliberate")

MODES = ("engine", "topk", "tail", "deepconf", "exact")
# Keeps log(R) finite when the top-k logprobs round to a total mass of 1.
MIN_TAIL_MASS = 1e-10


def token_self_certainty(logprobs: np.ndarray) -> float:
    """KL(uniform || p) when `logprobs` holds the whole distribution (logits work too)."""
    peak = logprobs.max()
    logsumexp = peak + math.log(np.exp(logprobs - peak).sum())
    return float(logsumexp - logprobs.mean() - math.log(len(logprobs)))


def tail_completion(top: np.ndarray, vocab_size: int) -> float:
    """SC of the distribution: the top-k as given, the rest of the mass uniform over V - k."""
    k = len(top)
    if vocab_size <= k:
        return token_self_certainty(top)
    rest = max(1.0 - float(np.exp(top).sum()), MIN_TAIL_MASS)
    tail_logprob = math.log(rest / (vocab_size - k))
    return -math.log(vocab_size) - (float(top.sum()) + (vocab_size - k) * tail_logprob) / vocab_size


class SelfCertaintyScorer:
    def __init__(self, mode: str = "engine", top_k: int = 20):
        if mode not in MODES:
            raise ValueError(f"self-certainty mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.top_k = top_k
        self.name = "self_certainty" if mode == "engine" else f"self_certainty_{mode}"
        self.full_vocab = mode == "exact"
        self.chosen_logprobs = False
        self.token_self_certainty = mode == "engine"
        self.logprobs_needed = None if mode in ("engine", "exact") else top_k

    def token_score(self, position: dict[int, float], vocab_size: int) -> float:
        logprobs = np.fromiter(position.values(), dtype=np.float64, count=len(position))
        if self.mode == "exact":
            return token_self_certainty(logprobs)
        # The engine may add the sampled token as a (k+1)-th entry: use exactly the top k.
        top = np.sort(logprobs)[::-1][: self.top_k]
        if self.mode == "topk":
            return token_self_certainty(top)
        if self.mode == "tail":
            return tail_completion(top, vocab_size)
        return float(-top.mean())

    def response_score(self, sample: Sample, vocab_size: int) -> float:
        """Plain mean over the response tokens; 0 (the least certain) for an empty response."""
        if self.mode == "engine":
            if sample.token_self_certainty is None:
                raise ValueError(f"{self.name} needs the engine's per-token self-certainty in every sample")
            values = sample.token_self_certainty
            return sum(values) / len(values) if values else 0.0
        if sample.top_logprobs is None:
            raise ValueError(f"{self.name} needs per-token top logprobs in every sample")
        positions = [p for p in sample.top_logprobs if p]
        if not positions:
            return 0.0
        return sum(self.token_score(p, vocab_size) for p in positions) / len(positions)

    async def score(self, context: ScoringContext, candidates: list[Sample]) -> list[float]:
        if self.mode == "engine" and any(sample.token_self_certainty is None for sample in candidates):
            # A record lost in the engine (an engine path we have not verified, such as async
            # scheduling on a GPU) must not fail the request: every candidate scores alike, so
            # a Borda vote becomes a plain majority vote and an argmax the first candidate.
            log.warning("the engine recorded no self-certainty for a candidate; "
                        "scoring these %d alike", len(candidates))
            return [0.0] * len(candidates)
        vocab_size = context.generator.vocab_size
        return [self.response_score(sample, vocab_size) for sample in candidates]
