"""Online confidence pruning (DeepConf online: Fu et al. 2025, "Deep Think with Confidence").

Per token the confidence is the engine's recorded self-certainty, or where the engine cannot
record it DeepConf's C_i = -(1/k) * sum of the top-k logprobs (k = 20); higher is more certain.
A sample's group confidence at a token is the mean over the last `window` tokens, and its
lowest group confidence is the least of those (the mean of all its tokens when it is shorter
than one window). The first `warmup` samples run to their end; the `percentile`-th percentile of
their lowest group confidences is the threshold (90: only the most confident tenth would pass,
DeepConf-low; 10: nine tenths, DeepConf-high). Every later sample is stopped, its engine request
aborted, at the first full window whose mean falls below it. The vote counts only finished
samples whose lowest group confidence reaches the threshold, each weighted by it, and greedy's
sample at its own confidence wherever it falls (under percentile 90 most of the warm-up is below
the threshold it sets, and the final rule must be able to keep greedy's answer); the samples
still running are stopped as soon as the vote's leader holds `consensus` of the weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from search.params import PruneSettings
from search.types import Sample, SamplingSpec
from search.voting import group_answers, leader

CONFIDENCE_TOP_K = 20  # DeepConf's k, vLLM's default --max-logprobs
PRUNED = "pruned"  # the finish_reason of a sample its stop rule ended


def confidence_spec(spec: SamplingSpec, records_self_certainty: bool) -> SamplingSpec:
    """`spec` asking for what token confidence reads: the recorded self-certainty, else top-k logprobs."""
    if records_self_certainty:
        return replace(spec, token_self_certainty=True)
    return replace(spec, logprobs=max(spec.logprobs or 0, CONFIDENCE_TOP_K))


class ConfidenceTrack:
    """One sample's token confidences, extended as its tokens arrive."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def extend(self, sample: Sample) -> list[float]:
        if sample.token_self_certainty is not None:
            self.values.extend(sample.token_self_certainty[len(self.values):])
        elif sample.top_logprobs is not None:
            self.values.extend(map(top_k_confidence, sample.top_logprobs[len(self.values):]))
        return self.values


def top_k_confidence(position: dict[int, float]) -> float:
    """DeepConf's C_i of one token from its top-k logprobs."""
    # vLLM may add the sampled token as a (k+1)-th entry: the top k at most.
    top = sorted(position.values(), reverse=True)[:CONFIDENCE_TOP_K]
    return -sum(top) / len(top) if top else 0.0


def last_window_mean(sample: Sample, window: int) -> float | None:
    """The mean confidence of `sample`'s last `window` tokens; None before it has that many."""
    if sample.token_self_certainty is not None:
        values = sample.token_self_certainty[-window:]
    elif sample.top_logprobs is not None:
        values = [top_k_confidence(position) for position in sample.top_logprobs[-window:]]
    else:
        return None
    return sum(values) / window if len(values) == window else None


def lowest_group_confidence(values: list[float], window: int) -> float:
    """The least mean over `window` consecutive tokens; the mean of all when there are fewer."""
    if not values:
        return 0.0
    if len(values) < window:
        return sum(values) / len(values)
    total = sum(values[:window])
    lowest = total
    for index in range(window, len(values)):
        total += values[index] - values[index - window]
        lowest = min(lowest, total)
    return lowest / window


@dataclass
class Pruning:
    """One search's pruning: the threshold its warm-up set, the stop rule, the vote and the report."""

    settings: PruneSettings
    extract: Callable[[str], str | None]
    equivalent: Callable[[str, str], bool]
    max_tokens: int
    threshold: float | None = None
    confidence: str = "self_certainty"
    warmup_lowest: list[float] = field(default_factory=list)
    # the vote so far: (answer, weight) of every finished sample that passed the threshold
    votes: list[tuple[str, float]] = field(default_factory=list)
    finished_lengths: list[int] = field(default_factory=list)
    stopped: dict[int, str] = field(default_factory=dict)  # sample index -> "confidence" | "consensus"
    not_drawn: int = 0
    tracks: dict[int, ConfidenceTrack] = field(default_factory=dict)
    greedy: Sample | None = None  # votes whatever its confidence
    settled: bool = False  # the vote's leader holds `consensus` of its weight

    def lowest(self, sample: Sample) -> float:
        track = ConfidenceTrack()
        return lowest_group_confidence(track.extend(sample), self.settings.window)

    def warm_up(self, samples: list[Sample], greedy: Sample | None = None) -> None:
        self.greedy = greedy
        self.confidence = "self_certainty" if samples and samples[0].token_self_certainty is not None else "top_k"
        self.warmup_lowest = [self.lowest(sample) for sample in samples]
        self.threshold = float(np.percentile(self.warmup_lowest, self.settings.percentile))
        for sample, lowest in zip(samples, self.warmup_lowest):
            self.finished(sample, lowest)

    def finished(self, sample: Sample, lowest: float) -> None:
        self.finished_lengths.append(len(sample.token_ids))
        answer = self.extract(sample.text)
        if answer is not None and (lowest >= self.threshold or sample is self.greedy):
            self.votes.append((answer, lowest))
            self.settled = self.vote_is_settled()

    def weight(self, sample: Sample) -> float:
        """A kept sample's vote weight: its lowest group confidence, 0 below the threshold
        (greedy's sample excepted)."""
        lowest = self.lowest(sample)
        return lowest if self.threshold is None or lowest >= self.threshold or sample is self.greedy else 0.0

    def vote_is_settled(self) -> bool:
        """The leader holds `consensus` of the weight of at least two votes (one vote always holds
        all). Computed once per new vote: the stop rule runs at every token."""
        if len(self.votes) < 2 or self.settings.consensus >= 1.0:
            return False
        groups = group_answers([answer for answer, _ in self.votes], self.equivalent,
                               [weight for _, weight in self.votes])
        total = sum(group.weight for group in groups)
        return total > 0 and leader(groups).weight >= self.settings.consensus * total

    def stop_rule(self, first: int) -> Callable[[int, Sample], bool]:
        """`should_stop` for one engine call whose samples are the search's `first`, `first`+1, ..."""
        return lambda index, partial: self.should_stop(first + index, partial)

    def should_stop(self, index: int, partial: Sample) -> bool:
        """The stop rule for the samples after the warm-up, `index` counted over the search."""
        if index in self.stopped:
            return True
        values = self.tracks.setdefault(index, ConfidenceTrack()).extend(partial)
        if partial.finish_reason is not None:
            self.finished(partial, lowest_group_confidence(values, self.settings.window))
            return False
        window = self.settings.window
        if len(values) >= window and sum(values[-window:]) / window < self.threshold:
            return self.stop(index, "confidence")
        if self.settled:
            return self.stop(index, "consensus")
        return False

    def stop(self, index: int, reason: str) -> bool:
        self.stopped[index] = reason
        return True

    def tokens_saved(self, stopped_tokens: list[int]) -> int:
        """Estimated tokens an unpruned search would have generated beyond this one: each stopped
        (with `stopped_tokens` each) or undrawn sample taken at the mean length of the samples
        that ended on their own."""
        if not self.finished_lengths:
            return 0
        typical = min(self.max_tokens, round(sum(self.finished_lengths) / len(self.finished_lengths)))
        return sum(max(0, typical - tokens) for tokens in stopped_tokens) + typical * self.not_drawn

    def report(self, stopped_tokens: list[int]) -> dict:
        """The response's `pruning` object; `stopped_tokens`: what each stopped sample generated."""
        reasons = list(self.stopped.values())
        threshold = None if self.threshold is None or not math.isfinite(self.threshold) else round(self.threshold, 4)
        return {
            "confidence": self.confidence, "window": self.settings.window,
            "percentile": self.settings.percentile, "warmup": len(self.warmup_lowest),
            "threshold": threshold, "pruned": reasons.count("confidence"),
            "stopped_at_consensus": reasons.count("consensus"), "not_drawn": self.not_drawn,
            "stopped_tokens": sum(stopped_tokens), "tokens_saved_estimate": self.tokens_saved(stopped_tokens),
            "voters": len(self.votes),
        }


@dataclass
class StepPruning:
    """The step searches' rule (mcts, critic): the first `warmup` steps grown in the tree set its
    threshold, the `percentile`-th percentile of their lowest group confidence (a step shorter
    than a window is judged by its mean). A later step is stopped while it is generated at the
    first full window below the threshold, and a step that ends below it is kept in the tree as
    pruned: it is never expanded, valued or judged. The threshold is stored with the tree, so a
    resumed search keeps it."""

    settings: PruneSettings
    threshold: float | None = None
    confidence: str = "self_certainty"
    warmup_lowest: list[float] = field(default_factory=list)
    pruned: int = 0
    cut_mid_step: int = 0
    stopped_tokens: int = 0

    def keeps(self, step: Sample) -> bool:
        """Whether a newly generated step may grow; the warm-up's steps always may."""
        lowest = lowest_group_confidence(ConfidenceTrack().extend(step), self.settings.window)
        if self.threshold is None:
            self.confidence = "self_certainty" if step.token_self_certainty is not None else "top_k"
            self.warmup_lowest.append(lowest)
            if len(self.warmup_lowest) >= self.settings.warmup:
                self.threshold = float(np.percentile(self.warmup_lowest, self.settings.percentile))
            return True
        if step.finish_reason == PRUNED:
            self.cut_mid_step += 1
            self.stopped_tokens += len(step.token_ids)
        elif lowest >= self.threshold:
            return True
        self.pruned += 1
        return False

    def should_stop(self, index: int, partial: Sample) -> bool:
        """The stop rule for every step generated once the threshold is set (a StopRule)."""
        if self.threshold is None or partial.finish_reason is not None:
            return False
        mean = last_window_mean(partial, self.settings.window)
        return mean is not None and mean < self.threshold

    def report(self) -> dict:
        threshold = None if self.threshold is None or not math.isfinite(self.threshold) else round(self.threshold, 4)
        return {"confidence": self.confidence, "window": self.settings.window,
                "percentile": self.settings.percentile, "warmup": len(self.warmup_lowest),
                "threshold": threshold, "pruned": self.pruned, "cut_mid_step": self.cut_mid_step,
                "stopped_tokens": self.stopped_tokens}
