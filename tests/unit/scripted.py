"""A Generator that replays pre-set samples, for testing strategies without a model.

Tokens are characters (id = ord), so encode/decode are exact and trivially checkable.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

from scorers.answers import MathAnswers
from search.types import Budget, MeteredGenerator, Sample, SamplingSpec, SearchContext


def sample(text: str, logprob: float = -1.0, top: list[dict[int, float]] | None = None,
           finish_reason: str = "stop") -> Sample:
    """A sample of `text`, one token per character, each with the chosen-token `logprob`."""
    ids = [ord(c) for c in text]
    return Sample(ids, text, [logprob] * len(ids), top, finish_reason)


class ScriptedGenerator:
    """Hands out `script` in order, spec.n at a time, each cut to spec.max_tokens.

    `script` is a list of Samples, or a function (prompt_ids, spec) -> list[Sample].
    Every call is recorded in `calls` as (prompt_ids, spec).
    """

    def __init__(self, script: list[Sample] | Callable[[list[int], SamplingSpec], list[Sample]],
                 vocab_size: int = 1000):
        self.script = script
        self.vocab_size = vocab_size
        self.calls: list[tuple[list[int], SamplingSpec]] = []

    async def generate(self, prompt_ids: Sequence[int], spec: SamplingSpec) -> list[Sample]:
        self.calls.append((list(prompt_ids), spec))
        if callable(self.script):
            samples = self.script(list(prompt_ids), spec)
        else:
            if len(self.script) < spec.n:
                raise AssertionError(f"script exhausted: {spec.n} asked, {len(self.script)} left")
            samples, self.script = self.script[: spec.n], self.script[spec.n:]
        return [self._cut(s, spec.max_tokens) for s in samples]

    @staticmethod
    def _cut(s: Sample, max_tokens: int) -> Sample:
        if len(s.token_ids) <= max_tokens:
            return s
        top = s.top_logprobs[:max_tokens] if s.top_logprobs is not None else None
        return replace(s, token_ids=s.token_ids[:max_tokens], text=s.text[:max_tokens],
                       logprobs=s.logprobs[:max_tokens], top_logprobs=top, finish_reason="length")

    def chat_prompt_ids(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        text = "".join(f"<{m['role']}>{m['content']}\n" for m in messages)
        return self.encode(text + ("<assistant>" if add_generation_prompt else ""))

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(chr(i) for i in token_ids)


class FixedScorer:
    """A Scorer returning preset scores, declaring whatever logprobs it is told to need."""

    name = "fixed"

    def __init__(self, scores: list[float], logprobs_needed: int | None = None,
                 full_vocab: bool = False):
        self.scores = scores
        self.logprobs_needed = logprobs_needed
        self.full_vocab = full_vocab

    async def score(self, context, candidates: list[Sample]) -> list[float]:
        return self.scores[: len(candidates)]


def search_context(generator, *, scorer=None, budget_tokens: int | None = None,
                   deadline: float | None = None, answer_format: str = "auto",
                   seed: int | None = None, progress=None, max_tokens: int = 64,
                   question: str = "What is 2 + 3?") -> SearchContext:
    return SearchContext(
        question=question,
        prompt_ids=[1, 2, 3],
        generator=MeteredGenerator(generator, Budget(max_tokens=budget_tokens, deadline=deadline)),
        answers=MathAnswers(answer_format),
        scorer=scorer,
        progress=progress,
        max_tokens=max_tokens,
        seed=seed,
    )
