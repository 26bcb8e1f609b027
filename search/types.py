"""The vocabulary every strategy speaks: what it may ask of the model, and what it returns.

Nothing here knows about HTTP, vLLM or Redis. The server hands a strategy a `Generator`
(backed by vLLM) and a `Scorer`; tests hand it a scripted one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

if TYPE_CHECKING:
    from search.voting import GreedyAnchor


@dataclass(frozen=True)
class SamplingSpec:
    """How to sample `n` continuations of one prompt (a subset of vLLM's SamplingParams)."""

    n: int = 1
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None  # top-k logprobs per generated token; None: no top-k
    # The chosen token's logprob at each position (Sample.logprobs). vLLM then runs a pass over
    # the whole vocabulary for every sequence at every step: asked for only by what reads it
    # (step priors and paths, the mean-logprob scorer).
    chosen_logprobs: bool = False
    full_vocab_logprobs: bool = False  # every token's logprob (expensive; exact self-certainty)
    # each token's exact self-certainty, computed by the engine beside sampling (when it can)
    token_self_certainty: bool = False
    ignore_eos: bool = False
    # The samples are (part of) an answer to the client's request, not a scorer's or judge's
    # own prompt: the server draws them under the request's own constraints (structured
    # outputs, logit bias, penalties, stop token ids, ...), the search setting only the fields above.
    answer: bool = False


@dataclass
class Sample:
    """One generated continuation, in token ids first and text second."""

    token_ids: list[int]
    text: str
    logprobs: list[float]  # logprob of each chosen token
    top_logprobs: list[dict[int, float]] | None = None  # per position: token id -> logprob
    finish_reason: str | None = None  # "stop" | "length" | "pruned" (by a StopRule) | None
    stop_reason: str | int | None = None  # the stop string or token that ended it, if any
    cached_prompt_tokens: int = 0
    token_self_certainty: list[float] | None = None  # per position, when the spec asked and the engine could
    request_id: str | None = None  # the engine request that generated it, when the engine names one
    call: CallTrace | None = None  # set by MeteredGenerator: the engine call that generated it


@dataclass(frozen=True)
class CallTrace:
    """How one sample came to be: the engine call that generated it, in the search's call order.

    `call` counts the search's engine calls finished by then, this one included (1-based), and
    `spent_tokens` the tokens they generated: replaying a tree in call order shows what it cost.
    Times are Unix seconds, comparable across the processes that share a tree store.
    """

    call: int
    spent_tokens: int
    requested_at: float
    finished_at: float
    prompt_tokens: int
    cached_prompt_tokens: int
    generated_tokens: int
    request_id: str | None = None
    finish_reason: str | None = None

    def to_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_dict(cls, data: dict) -> CallTrace:
        return cls(**{key: data[key] for key in data if key in CALL_TRACE_FIELDS})

    def shifted(self, calls: int, tokens: int) -> CallTrace:
        """The same call counted after `calls` earlier calls that generated `tokens` (a run that
        continues a stored tree)."""
        return replace(self, call=self.call + calls, spent_tokens=self.spent_tokens + tokens)


CALL_TRACE_FIELDS = frozenset(declared.name for declared in fields(CallTrace))


# Called while samples are generated with a sample's index in its call and what it has so far
# (valid during the call only), once per new output; the last call has finish_reason set.
# True stops that sample at once: its engine work is aborted and it comes back cut where it
# was, with finish_reason "pruned".
StopRule = Callable[[int, "Sample"], bool]


class Generator(Protocol):
    """What a strategy may ask of the model."""

    vocab_size: int
    max_model_len: int  # prompt plus generated tokens, at most
    records_self_certainty: bool  # honours SamplingSpec.token_self_certainty

    async def generate(self, prompt_ids: Sequence[int], spec: SamplingSpec,
                       should_stop: StopRule | None = None) -> list[Sample]:
        """`spec.n` samples continuing `prompt_ids`: in one engine request, or with `should_stop`
        in one request per sample, each stopped on its own."""
        ...

    def chat_prompt_ids(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of `messages` under the model's chat template."""
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids of plain text (no special tokens added)."""
        ...

    def decode(self, token_ids: Sequence[int]) -> str:
        ...


class Scorer(Protocol):
    """Values finished candidates (or partial paths). May itself call the generator.

    `chosen_logprobs`, `logprobs_needed`, `full_vocab` and `token_self_certainty` say what the
    candidates must be sampled with: each chosen token's logprob, top-k logprobs per token (None:
    none), every token's logprob, or each token's self-certainty recorded by the engine.
    """

    name: str
    chosen_logprobs: bool
    logprobs_needed: int | None
    full_vocab: bool
    token_self_certainty: bool

    async def score(self, context: "ScoringContext", candidates: list[Sample]) -> list[float]:
        ...


@dataclass(frozen=True)
class StepToJudge:
    """One reasoning step as a critic sees it: the solution so far, then the step itself."""

    partial: str
    step: str


class StepCritic(Protocol):
    """Judges single reasoning steps: the actor model under a critic prompt, or another model.

    Each method takes a whole batch so the engine can serve it at once. A critic on another
    model keeps its own generator but should meter it against the request's Budget.
    """

    name: str

    async def judge(self, context: "ScoringContext", steps: Sequence[StepToJudge]) -> list[float]:
        """The probability, in [0, 1], that each step is correct."""
        ...

    async def critique(self, context: "ScoringContext", steps: Sequence[StepToJudge]) -> list[str]:
        """A short critique of each step, saying what is wrong with it."""
        ...


class AnswerExtractor(Protocol):
    """Finds a response's final answer and decides when two answers are the same."""

    def extract(self, text: str) -> str | None:
        ...

    def equivalent(self, a: str, b: str) -> bool:
        ...


@dataclass
class ScoringContext:
    """What a scorer may need besides the candidates: the question and the generator.

    The generator is the metered one, so whatever a scorer generates counts in the usage.
    """

    prompt_ids: list[int]
    question: str
    generator: "MeteredGenerator"


QUOTE_LIMIT = 200


def shown(value) -> str:
    """A client's value as an error message quotes it: repr, cut at QUOTE_LIMIT characters."""
    text = repr(value)
    return text if len(text) <= QUOTE_LIMIT else f"{text[:QUOTE_LIMIT]}... ({len(text)} characters)"


class InvalidSearchParam(ValueError):
    """A bad `search` parameter; `param` names it as the client wrote it, e.g. "search.n"."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


@dataclass
class Usage:
    """What a request cost. `completion_tokens` counts every generated token, scorers included."""

    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    engine_calls: int = 0

    def add(self, other: "Usage") -> None:
        self.prompt_tokens += other.prompt_tokens
        self.cached_prompt_tokens += other.cached_prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.engine_calls += other.engine_calls


class BudgetExhausted(Exception):
    """Raised before an engine call that the budget cannot afford."""


@dataclass(eq=False)  # one meter per search, kept in sets by identity
class Budget:
    """A hard cap on generated tokens and wall time for one whole search.

    A call in flight holds a reservation of its worst case (n * max_tokens), so concurrent
    calls can never overrun the cap together; the reservation turns into the tokens actually
    generated when the call returns.
    """

    max_tokens: int | None = None
    deadline: float | None = None  # time.monotonic() value
    spent_tokens: int = 0
    reserved_tokens: int = 0
    deadline_reason: str = "deadline reached"
    # Set when `stop_at` brings the deadline forward, to wake calls already waiting on the old one.
    deadline_moved: asyncio.Event = field(default_factory=asyncio.Event, repr=False, compare=False)

    def remaining(self) -> int | None:
        if self.max_tokens is None:
            return None
        return max(0, self.max_tokens - self.spent_tokens - self.reserved_tokens)

    def time_left(self) -> float | None:
        """Seconds to the deadline (None: no deadline)."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def stop_at(self, deadline: float, reason: str) -> None:
        """Bring the deadline forward (a server shutting down): calls in flight past it are cut."""
        if self.deadline is None or deadline < self.deadline:
            self.deadline, self.deadline_reason = deadline, reason
            self.deadline_moved.set()

    def check(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise BudgetExhausted(self.deadline_reason)
        if self.max_tokens is not None and self.remaining() == 0:
            raise BudgetExhausted("token budget spent")

    def cap(self, spec: SamplingSpec) -> SamplingSpec:
        """`spec` with `max_tokens` lowered so that n samples cannot overrun the budget."""
        self.check()
        left = self.remaining()
        if left is None or spec.n * spec.max_tokens <= left:
            return spec
        per_sample = left // spec.n
        if per_sample == 0:
            raise BudgetExhausted("token budget too small for another call")
        return replace(spec, max_tokens=per_sample)

    def reserve(self, spec: SamplingSpec) -> SamplingSpec:
        """`cap(spec)`, holding its worst case until `settle` is called."""
        spec = self.cap(spec)
        self.reserved_tokens += spec.n * spec.max_tokens
        return spec

    def settle(self, spec: SamplingSpec, generated: int) -> None:
        self.reserved_tokens -= spec.n * spec.max_tokens
        self.spent_tokens += generated


class MeteredGenerator:
    """Wraps a Generator: enforces the Budget before every call and records Usage.

    `budget_limited` turns true once the budget had to shorten a call's max_tokens.
    """

    def __init__(self, inner: Generator, budget: Budget | None = None, usage: Usage | None = None):
        self.inner = inner
        self.budget = budget or Budget()
        # Shared with another MeteredGenerator (a critic on another model) the request's usage
        # counts both models' tokens.
        self.usage = usage if usage is not None else Usage()
        self.vocab_size = inner.vocab_size
        self.max_model_len = inner.max_model_len
        self.records_self_certainty = inner.records_self_certainty
        self.budget_limited = False

    async def generate(self, prompt_ids: Sequence[int], spec: SamplingSpec,
                       should_stop: StopRule | None = None) -> list[Sample]:
        """The inner generator's samples; stopped ones count in the usage with what they generated."""
        affordable = self.budget.reserve(spec)
        self.budget_limited |= affordable.max_tokens < spec.max_tokens
        generated = 0
        requested_at = round(time.time(), 3)
        call = (self.inner.generate(prompt_ids, affordable) if should_stop is None
                else self.inner.generate(prompt_ids, affordable, should_stop))
        try:
            samples = await self._before_deadline(call)
            generated = sum(len(s.token_ids) for s in samples)
        finally:
            self.budget.settle(affordable, generated)
        self.usage.completion_tokens += generated
        self.usage.prompt_tokens += len(prompt_ids)
        self.usage.cached_prompt_tokens += samples[0].cached_prompt_tokens if samples else 0
        self.usage.engine_calls += 1
        return [self.traced(sample, len(prompt_ids), requested_at) for sample in samples]

    def traced(self, sample: Sample, prompt_tokens: int, requested_at: float) -> Sample:
        """`sample` with the trace of the call that just returned it."""
        return replace(sample, call=CallTrace(
            call=self.usage.engine_calls, spent_tokens=self.usage.completion_tokens, requested_at=requested_at,
            finished_at=round(time.time(), 3), prompt_tokens=prompt_tokens, cached_prompt_tokens=sample.cached_prompt_tokens,
            generated_tokens=len(sample.token_ids), request_id=sample.request_id, finish_reason=sample.finish_reason))

    async def _before_deadline(self, call):
        """`call`'s result; a call still running at the deadline (also one brought forward while
        it runs) is cancelled, its engine requests aborted, and the search told why."""
        task = asyncio.ensure_future(call)
        try:
            while True:
                moved = asyncio.ensure_future(self.budget.deadline_moved.wait())
                try:
                    await asyncio.wait({task, moved}, timeout=self.budget.time_left(),
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    moved.cancel()
                if task.done():
                    return task.result()
                self.budget.deadline_moved.clear()
                if self.budget.time_left() == 0:
                    raise BudgetExhausted(self.budget.deadline_reason)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    async def generate_many(
        self, requests: Sequence[tuple[Sequence[int], SamplingSpec]], should_stop: StopRule | None = None
    ) -> list[list[Sample]]:
        """Several requests issued together so the engine batches them; all are sent or none.

        When the budget cannot afford every request's max_tokens, all are shortened alike
        rather than the first ones starving the last. `should_stop` is every request's stop rule.
        """
        tasks = self.start_many(requests, should_stop)
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            # gather leaves the siblings of a failed call running; nobody would await them.
            for task in tasks:
                task.cancel()
            raise

    def start_many(self, requests: Sequence[tuple[Sequence[int], SamplingSpec]],
                   should_stop: StopRule | None = None) -> list[asyncio.Task]:
        """generate_many's requests, each started as a task of its own (in request order), for a
        caller that takes each reply as it comes; it must cancel the tasks it abandons."""
        self.budget.check()
        left = self.budget.remaining()
        worst_case = sum(spec.n * spec.max_tokens for _, spec in requests)
        if left is not None and worst_case > left:
            per_sample = left // sum(spec.n for _, spec in requests)
            if per_sample == 0:
                raise BudgetExhausted("token budget too small for these calls")
            requests = [(ids, replace(spec, max_tokens=min(spec.max_tokens, per_sample)))
                        for ids, spec in requests]
            self.budget_limited = True
        return [asyncio.ensure_future(self.generate(ids, spec, should_stop)) for ids, spec in requests]

    def chat_prompt_ids(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        return self.inner.chat_prompt_ids(messages, add_generation_prompt)

    def encode(self, text: str) -> list[int]:
        return self.inner.encode(text)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.inner.decode(token_ids)


@dataclass
class Candidate:
    """One finished answer the search considered."""

    sample: Sample
    answer: str | None = None  # extracted final answer, normalized
    score: float | None = None
    votes: float | None = None  # vote share of this candidate's answer, 0..1


@dataclass
class SearchContext:
    """Everything a strategy is handed for one request.

    `critic` judges single steps for the critic-guided search. `progress`, when given, is
    called with a small dict after every engine round so the server can stream it.
    `max_tokens` caps each sample (in a step search, the whole answer path) and `stop` strings
    end one; `seed` (if any) makes sampling reproducible, each engine call deriving its own
    seed from it. Build it with keywords: the field order is not part of the contract.
    """

    question: str
    prompt_ids: list[int]
    generator: MeteredGenerator
    answers: AnswerExtractor
    scorer: Scorer | None = None
    critic: StepCritic | None = None
    progress: Callable[[dict], None] | None = None
    max_tokens: int = 256
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def scoring_context(self) -> ScoringContext:
        return ScoringContext(self.prompt_ids, self.question, self.generator)


@dataclass
class SearchResult:
    """What a strategy returns: the chosen one, everything it weighed, and what it cost.

    When the budget ran out before anything was generated, `chosen` is an empty candidate,
    `candidates` is empty and `selected_index` is -1.
    """

    strategy: str
    chosen: Candidate
    selected_index: int
    candidates: list[Candidate]
    usage: Usage
    truncated: bool = False
    tree: dict | None = None  # serialized tree, for the store and the trace
    trace: list[dict] = field(default_factory=list)
    pruning: dict | None = None  # what confidence pruning stopped and saved (search.pruning.Pruning.report)
    greedy: "GreedyAnchor | None" = None  # how the answer stands against greedy's
