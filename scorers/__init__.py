"""Scorers (how a candidate is valued), the default step critic, and answer extraction.
`SCORERS[name]()` builds a scorer; `PromptedStepCritic()` is the critic strategy's default."""

from __future__ import annotations

from typing import Callable

from scorers.answers import MathAnswers, StructuredAnswers, answers_equivalent, extract_answer
from scorers.mean_logprob import MeanLogprobScorer
from scorers.p_true import PTrueScorer
from scorers.self_certainty import SelfCertaintyScorer
from scorers.step_critic import PromptedStepCritic
from search.types import Scorer

SCORERS: dict[str, Callable[[], Scorer]] = {
    "self_certainty": lambda: SelfCertaintyScorer("engine"),
    # Of the top-k estimates, tail ranks closest to the exact score (bench/self_certainty_fidelity.py).
    "self_certainty_tail": lambda: SelfCertaintyScorer("tail"),
    "self_certainty_topk": lambda: SelfCertaintyScorer("topk"),
    "self_certainty_deepconf": lambda: SelfCertaintyScorer("deepconf"),
    "self_certainty_exact": lambda: SelfCertaintyScorer("exact"),
    "mean_logprob": MeanLogprobScorer,
    "p_true": PTrueScorer,
    "p_true_follow_up": lambda: PTrueScorer(follow_up=True),
}

__all__ = ["SCORERS", "MathAnswers", "PromptedStepCritic", "StructuredAnswers", "answers_equivalent",
           "extract_answer"]
