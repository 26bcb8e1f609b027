"""A Generator that replays pre-set samples, for testing strategies without a model.

Tokens are characters (id = ord), so encode/decode are exact and trivially checkable.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Callable, Sequence

from scorers.answers import MathAnswers
from search.types import Budget, MeteredGenerator, Sample, SamplingSpec, SearchContext, StepToJudge, StopRule


def sample(text: str, logprob: float = -1.0, top: list[dict[int, float]] | None = None,
           finish_reason: str = "stop", confidence: list[float] | None = None) -> Sample:
    """A sample of `text`, one token per character, each with the chosen-token `logprob` (and
    `confidence` as the engine's recorded self-certainty of each token)."""
    ids = [ord(c) for c in text]
    return Sample(ids, text, [logprob] * len(ids), top, finish_reason, token_self_certainty=confidence)


def prefix(s: Sample, tokens: int, finish_reason: str | None) -> Sample:
    """The first `tokens` tokens of `s` (one character each) and everything recorded for them."""
    top = s.top_logprobs[:tokens] if s.top_logprobs is not None else None
    certainty = s.token_self_certainty[:tokens] if s.token_self_certainty is not None else None
    return replace(s, token_ids=s.token_ids[:tokens], text=s.text[:tokens], logprobs=s.logprobs[:tokens],
                   top_logprobs=top, token_self_certainty=certainty, finish_reason=finish_reason)


class ScriptedGenerator:
    """Hands out `script` in order, spec.n at a time, each cut to spec.max_tokens.

    `script` is a list of Samples, or a function (prompt_ids, spec) -> list[Sample].
    Every call is recorded in `calls` as (prompt_ids, spec). With a stop rule the samples of a
    call grow a token at a time, in turn, as a batch would; a stopped one is recorded in
    `aborted` as (its index in the call, the tokens it had).
    """

    def __init__(self, script: list[Sample] | Callable[[list[int], SamplingSpec], list[Sample]],
                 vocab_size: int = 1000, max_model_len: int = 100_000):
        self.script = script
        self.vocab_size = vocab_size
        self.max_model_len = max_model_len
        self.records_self_certainty = False
        self.calls: list[tuple[list[int], SamplingSpec]] = []
        self.aborted: list[tuple[int, int]] = []

    async def generate(self, prompt_ids: Sequence[int], spec: SamplingSpec,
                       should_stop: StopRule | None = None) -> list[Sample]:
        self.calls.append((list(prompt_ids), spec))
        if callable(self.script):
            samples = self.script(list(prompt_ids), spec)
        else:
            if len(self.script) < spec.n:
                raise AssertionError(f"script exhausted: {spec.n} asked, {len(self.script)} left")
            samples, self.script = self.script[: spec.n], self.script[spec.n:]
        samples = [self._cut(s, spec.max_tokens) for s in samples]
        return samples if should_stop is None else self._stream(samples, should_stop)

    def _stream(self, samples: list[Sample], should_stop: StopRule) -> list[Sample]:
        results = list(samples)
        running = list(range(len(samples)))
        tokens = 0
        while running:
            tokens += 1
            for index in list(running):
                whole = samples[index]
                if tokens >= len(whole.token_ids):
                    should_stop(index, whole)  # its last output: finish_reason set
                    running.remove(index)
                elif should_stop(index, prefix(whole, tokens, None)):
                    self.aborted.append((index, tokens))
                    results[index] = prefix(whole, tokens, "pruned")
                    running.remove(index)
        return results

    @staticmethod
    def _cut(s: Sample, max_tokens: int) -> Sample:
        return s if len(s.token_ids) <= max_tokens else prefix(s, max_tokens, "length")

    def chat_prompt_ids(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        text = "".join(f"<{m['role']}>{m['content']}\n" for m in messages)
        return self.encode(text + ("<assistant>" if add_generation_prompt else ""))

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(chr(i) for i in token_ids)


def continuation(text: str, spec: SamplingSpec, logprob: float = -1.0,
                 ids_keep_stop: bool = False) -> Sample:
    """What an engine returns for `text` under `spec`: cut at the first stop string to end
    within max_tokens (stop_reason set, the string dropped from the text), else at max_tokens.
    With `ids_keep_stop` the token ids still hold the stop string, as vLLM's do."""
    ends = [(text.index(stop) + len(stop), stop) for stop in spec.stop if stop in text]
    end, stop = min(ends) if ends else (len(text), None)
    if stop is not None and end <= spec.max_tokens:
        kept = text[: end - len(stop)]
        ids = [ord(c) for c in (text[:end] if ids_keep_stop else kept)]
        return Sample(ids, kept, [logprob] * len(ids), None, "stop", stop)
    if len(text) > spec.max_tokens:
        text = text[: spec.max_tokens]
        return Sample([ord(c) for c in text], text, [logprob] * len(text), None, "length")
    return Sample([ord(c) for c in text], text, [logprob] * len(text), None, "stop")


def by_prompt_suffix(table: dict[str, list], ids_keep_stop: bool = False, across_calls: bool = False):
    """A script answering by how the prompt ends: `table` maps a prompt suffix (the longest
    that matches wins; "" matches any prompt) to the texts written there, one per sample,
    cycled; an entry may be (text, logprob). Stop strings and max_tokens apply as in an engine.
    Each call starts the cycle afresh, or `across_calls` where the last call to the same prompt
    left it (as one-sample requests with their own seeds would)."""
    served: dict[str, int] = {}

    def respond(prompt_ids: list[int], spec: SamplingSpec) -> list[Sample]:
        prompt = "".join(chr(i) for i in prompt_ids)
        suffix = max((key for key in table if prompt.endswith(key)), key=len)
        entries = [e if isinstance(e, tuple) else (e, -1.0) for e in table[suffix]]
        first = served.get(prompt, 0) if across_calls else 0
        served[prompt] = first + spec.n
        return [continuation(text, spec, logprob, ids_keep_stop)
                for text, logprob in (entries[(first + i) % len(entries)] for i in range(spec.n))]
    return respond


class PathScorer:
    """A Scorer valuing a path by its exact text (`default` when unlisted); records batches."""

    name = "path"
    chosen_logprobs = False
    logprobs_needed = None
    full_vocab = False
    token_self_certainty = False

    def __init__(self, values: dict[str, float], default: float = 0.5):
        self.values = values
        self.default = default
        self.batches: list[list[str]] = []

    async def score(self, context, candidates: list[Sample]) -> list[float]:
        self.batches.append([sample.text for sample in candidates])
        return [self.values.get(sample.text, self.default) for sample in candidates]


class ScriptedCritic:
    """A StepCritic judging a step by its stripped text (`default` when unlisted) and
    critiquing every step alike; records each batch of steps it was shown."""

    name = "scripted"

    def __init__(self, scores: dict[str, float], default: float = 0.9,
                 critique: str = "The step is wrong."):
        self.scores = scores
        self.default = default
        self.critique_text = critique
        self.judged: list[list[StepToJudge]] = []
        self.critiqued: list[list[StepToJudge]] = []

    async def judge(self, context, steps: list[StepToJudge]) -> list[float]:
        self.judged.append(list(steps))
        return [self.scores.get(step.step.strip(), self.default) for step in steps]

    async def critique(self, context, steps: list[StepToJudge]) -> list[str]:
        self.critiqued.append(list(steps))
        return [self.critique_text for _ in steps]


class FixedScorer:
    """A Scorer returning preset scores, declaring whatever logprobs it is told to need."""

    name = "fixed"

    def __init__(self, scores: list[float], logprobs_needed: int | None = None,
                 full_vocab: bool = False):
        self.scores = scores
        self.chosen_logprobs = False
        self.logprobs_needed = logprobs_needed
        self.full_vocab = full_vocab
        self.token_self_certainty = False

    async def score(self, context, candidates: list[Sample]) -> list[float]:
        return self.scores[: len(candidates)]


def search_context(generator, *, scorer=None, critic=None, budget_tokens: int | None = None,
                   deadline: float | None = None, answer_format: str = "auto",
                   seed: int | None = None, progress=None, max_tokens: int = 64,
                   question: str = "What is 2 + 3?", stop: tuple[str, ...] = ()) -> SearchContext:
    return SearchContext(
        question=question,
        prompt_ids=[1, 2, 3],
        generator=MeteredGenerator(generator, Budget(max_tokens=budget_tokens, deadline=deadline)),
        answers=MathAnswers(answer_format),
        scorer=scorer,
        critic=critic,
        progress=progress,
        max_tokens=max_tokens,
        seed=seed,
        stop=stop,
    )


class OverlapCounter(ScriptedGenerator):
    """A ScriptedGenerator that yields once inside every call and records the most calls
    that were in flight at the same time."""

    def __init__(self, script):
        super().__init__(script)
        self.in_flight = 0
        self.most_in_flight = 0

    async def generate(self, prompt_ids, spec):
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0)
        try:
            return await super().generate(prompt_ids, spec)
        finally:
            self.in_flight -= 1


def terminal(root, answer: str | None, visits: int, score: float):
    """A finished path below `root` answering `answer`, visited `visits` times at value `score`."""
    return root.add_child(text=f"The answer is {answer}.", terminal=True, answer=answer,
                          visits=visits, value_sum=visits * score, score=score)


class SecondCallHangs(ScriptedGenerator):
    """Answers its first call with two "The answer is 7." samples, then hangs until cancelled
    (a call still running at a deadline); `cancelled` is set when it is."""

    def __init__(self):
        super().__init__([])
        self.answered = [sample("The answer is 7."), sample("The answer is 7.")]
        self.cancelled = asyncio.Event()

    async def generate(self, prompt_ids, spec, should_stop=None):
        if not self.answered:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return [self.answered.pop(0) for _ in range(spec.n)]
