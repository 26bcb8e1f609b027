"""Running one search, with no HTTP in sight: plan it from the request's `search` object, answer
it from the tree store when the store already holds it, else run the strategy on the engine and
store what it grew. The routes hand it a `SearchJob` and shape what comes back."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import socket
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

from vllm import SamplingParams
from vllm.exceptions import VLLMValidationError

import httpx

from scorers import SCORERS, MathAnswers, PromptedStepCritic, StructuredAnswers
from scorers.http_verifier import LOOPBACK_HOSTS, HttpVerifier, check_verifier_spec, httpx_post
from search import STRATEGIES, parse_params
from search.params import CommonParams, StepParams, bounded, check_fields, documented
from search.tree import Tree
from search.voting import GreedyAnchor
from search.types import (
    AnswerExtractor, Budget, Candidate, InvalidSearchParam, MeteredGenerator, Sample, Scorer, SearchContext,
    SearchResult, Usage, shown,
)
from server import metrics
from server.engine import VLLMGenerator
from server.tree_feed import TreeFeeds
from server.tree_store import TreeStore, is_tree_id, tree_key, tree_scope

# Per-sample cap when the client gives no max_tokens: a search multiplies every sample's length.
DEFAULT_SEARCH_MAX_TOKENS = 512
# This process among the replicas and API-server processes that share a tree store.
REPLICA = f"{socket.gethostname()}/{os.getpid()}"


class SearchRequestError(VLLMValidationError):
    """A search the client asked for that cannot run as asked: a 400 naming the parameter."""

    def __init__(self, message: str, parameter: str | None = "search"):
        super().__init__(message, parameter=parameter)
        self.message = message


@dataclass(frozen=True)
class ServingOptions:
    """The keys of `search` that say how to serve it, not what the strategy does: the one list of
    them. They are checked like a strategy's parameters, published beside them in the schema, and
    never shape the tree."""

    budget_tokens: int | None = bounded(
        None, 1, 10**9, doc="Hard cap on the tokens the whole search generates (a larger one continues a stored mcts tree).")
    cache: bool = documented(True, "Serve from and store in the tree cache.")
    tree_id: str | None = documented(None, "Resume or re-read the stored tree of an earlier identical search.")
    return_trace: bool = documented(False, "Add the search's trace to the report.")
    deadline_s: float | None = bounded(
        None, 0.0, 86400.0, low_inclusive=False,
        doc="Seconds the search may take: then it answers with the best it has, truncated, and engine work still "
            "running is aborted.")

    def __post_init__(self) -> None:
        check_fields(self)
        if self.tree_id is not None and not is_tree_id(self.tree_id):
            raise InvalidSearchParam("search.tree_id", f"not a tree id: {shown(self.tree_id)}")


SERVING_KEYS = frozenset(declared.name for declared in fields(ServingOptions))


def parse_search(search: dict[str, Any]) -> tuple[CommonParams, ServingOptions]:
    """The strategy's parameters and the serving options in a `search` object, checked
    (InvalidSearchParam naming the field)."""
    params = parse_params(None, {key: value for key, value in search.items() if key not in SERVING_KEYS})
    return params, ServingOptions(**{key: value for key, value in search.items() if key in SERVING_KEYS})


@dataclass(frozen=True)
class SearchPlan:
    """The `search` object, checked: the strategy with its parameters and scorer, and how to serve it."""

    strategy: str
    params: CommonParams
    scorer: Scorer | None
    options: ServingOptions = ServingOptions()


@dataclass(frozen=True)
class SearchJob:
    """One search to run: the plan, and what vLLM derived from the client's request (the
    rendered prompt, its sampling parameters and its request id)."""

    plan: SearchPlan
    question: str
    prompt_ids: tuple[int, ...]
    sampling: SamplingParams
    max_tokens: int
    request_id: str
    answers: AnswerExtractor | None = None  # how votes compare answers (None: by the sampling)
    scope: str = ""  # whose trees it may read and grow (SearchService.scope_for)
    model: str = ""  # the model the client asked for (the served one, or an alias)

    def answer_extractor(self) -> AnswerExtractor:
        """Answers as the client will use them: as `answers` says (the tool calls in them), else
        the whole structured output when the request fixed the form, else the final answer."""
        if self.answers is not None:
            return self.answers
        if self.sampling.structured_outputs is not None:
            return StructuredAnswers()
        return MathAnswers(self.plan.params.answer_format)

    @property
    def stop(self) -> tuple[str, ...]:
        return tuple(self.sampling.stop or ())


@dataclass(frozen=True)
class SearchOutcome:
    """A search's result as served: fresh from the engine or from the tree store."""

    result: SearchResult
    tree_id: str
    cache_hit: bool
    elapsed_s: float
    grown_by: str  # the process that grew the tree (REPLICA, unless a cache hit)
    verifier: dict | None = None  # an HTTP verifier's calls, seconds and failure (HttpVerifier.report)

    def report(self, return_trace: bool) -> dict[str, Any]:
        """The `search` object of the response."""
        result, chosen = self.result, self.result.chosen
        report = {
            "strategy": result.strategy, "tree_id": self.tree_id, "cache_hit": self.cache_hit,
            "candidates": len(result.candidates), "selected_index": result.selected_index,
            "selected_score": chosen.score, "vote_share": chosen.votes, "answer": chosen.answer,
            "answer_tokens": len(chosen.sample.token_ids), "truncated": result.truncated,
            "elapsed_s": round(self.elapsed_s, 3), "engine_calls": result.usage.engine_calls,
            "served_by": REPLICA, "grown_by": self.grown_by,
            "truncated_reason": truncated_reason(result), "pruning": result.pruning,
        }
        if result.greedy is not None:
            report["greedy"] = result.greedy.report()
        if self.verifier is not None:
            report["verifier"] = self.verifier
        if return_trace:
            report["trace"] = result.trace
        return {key: value for key, value in report.items() if value is not None}


class SearchService:
    """Plans and runs searches on one engine (plus an optional critic engine) and a tree store."""

    def __init__(self, generator: VLLMGenerator, tree_store: TreeStore, critic: VLLMGenerator | None = None,
                 max_search_tokens: int | None = None, tree_secret: bytes | None = None,
                 scoped_trees: bool = True, max_search_seconds: float | None = None,
                 verifier_hosts: frozenset[str] = LOOPBACK_HOSTS):
        self.generator = generator
        self.tree_store = tree_store
        self.critic = critic
        self.max_search_tokens = max_search_tokens
        self.tree_secret = tree_secret or secrets.token_bytes(32)
        self.scoped_trees = scoped_trees
        self.max_search_seconds = max_search_seconds
        self.running_budgets: set[Budget] = set()
        self.feeds = TreeFeeds(tree_store)
        self.verifier_hosts = verifier_hosts
        self.http: httpx.AsyncClient | None = None  # made on the first verifier call, on the serving loop

    def scope_for(self, api_key: str | None) -> str:
        """The tree scope of a client: its API key's, or one for all under --tree-cache-scope global."""
        return tree_scope(self.tree_secret, api_key) if self.scoped_trees else ""

    def plan(self, search: dict[str, Any], n: int | None, max_tokens: int | None = None) -> SearchPlan:
        """The checked plan of `search` for a request asking for `n` choices of at most
        `max_tokens` tokens each (None: the search's default)."""
        try:
            params, options = parse_search(search)
        except InvalidSearchParam as exc:
            raise SearchRequestError(f"{exc.param}: {exc.message}", exc.param) from exc
        if (n or 1) != 1:
            raise SearchRequestError("n must be 1 when a search is asked; the search's own width is search.n.", "n")
        return SearchPlan(search["strategy"], params, self.scorer(params), self.capped(options, params, max_tokens))

    def capped(self, options: ServingOptions, params: CommonParams, max_tokens: int | None) -> ServingOptions:
        """Under --max-search-tokens: a 400 for a search that asks for more, else the cap as its budget."""
        cap = self.max_search_tokens
        if cap is None:
            return options
        if options.budget_tokens is not None and options.budget_tokens > cap:
            raise SearchRequestError(f"search.budget_tokens: at most {cap} on this server (--max-search-tokens), "
                                     f"got {options.budget_tokens}.", "search.budget_tokens")
        per_sample = max_tokens or DEFAULT_SEARCH_MAX_TOKENS
        if options.budget_tokens is None and params.n * per_sample > cap:
            raise SearchRequestError(f"search.n x max_tokens = {params.n} x {per_sample} is over the {cap} tokens "
                                     "a search may ask for on this server (--max-search-tokens): lower either, or "
                                     "set search.budget_tokens to stop the search there.", "search.n")
        return options if options.budget_tokens is not None else dataclasses.replace(options, budget_tokens=cap)

    def scorer(self, params: CommonParams) -> Scorer | None:
        if params.scorer is None:
            return None
        if isinstance(params.scorer, dict):
            return self.verifier(params)
        if params.scorer not in SCORERS:
            raise SearchRequestError(f"search.scorer: unknown scorer {shown(params.scorer)}; known: {', '.join(SCORERS)}",
                                     "search.scorer")
        scorer = SCORERS[params.scorer]()
        if scorer.token_self_certainty and not self.generator.records_self_certainty:
            # No recorder in this engine (speculative decoding): the best top-k estimate instead, or
            # for a step search, whose tree keeps no top-k logprobs, P(True).
            scorer = SCORERS["p_true" if isinstance(params, StepParams) else "self_certainty_tail"]()
        limit = self.generator.max_logprobs
        if scorer.full_vocab and limit != -1:
            raise SearchRequestError(f"search.scorer: {params.scorer} needs full-vocabulary logprobs; start the "
                                     "server with --max-logprobs -1.", "search.scorer")
        if limit != -1 and (scorer.logprobs_needed or 0) > limit:
            raise SearchRequestError(f"search.scorer: {params.scorer} needs {scorer.logprobs_needed} logprobs per "
                                     f"token; start the server with --max-logprobs {scorer.logprobs_needed}.",
                                     "search.scorer")
        return scorer

    def verifier(self, params: CommonParams) -> HttpVerifier:
        """The HTTP verifier `search.scorer` names, falling back to the strategy's own default
        scorer (mean logprob for those without one) when it fails."""
        try:
            url, timeout_s = check_verifier_spec(params.scorer, self.verifier_hosts)
        except InvalidSearchParam as exc:
            raise SearchRequestError(f"{exc.param}: {exc.message}", exc.param) from exc
        default = next(declared.default for declared in fields(params) if declared.name == "scorer")
        fallback = self.scorer(dataclasses.replace(params, scorer=default if isinstance(default, str)
                                                   else "mean_logprob"))
        if self.http is None:
            # No proxies from the environment and no redirects: the request goes to the host checked.
            self.http = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        return HttpVerifier(url, timeout_s, httpx_post(self.http), fallback)

    async def run(self, job: SearchJob) -> SearchOutcome:
        """Answer from the stored tree when it already holds this search, else run it (under the
        tree's lock, so replicas sharing Redis don't grow it twice) and store what it grew. A
        search that runs publishes what it does on the tree's feed (self.feeds)."""
        started = time.monotonic()
        try:
            result, tree_id, grown_by = await self._serve(job)
        except asyncio.CancelledError:
            metrics.SEARCHES.labels(job.plan.strategy, "cancelled").inc()
            raise
        verifier = job.plan.scorer.report() if isinstance(job.plan.scorer, HttpVerifier) and grown_by is None else None
        return SearchOutcome(result, tree_id, grown_by is not None, time.monotonic() - started, grown_by or REPLICA,
                             verifier)

    async def _serve(self, job: SearchJob) -> tuple[SearchResult, str, str | None]:
        """The result, its tree id, and who grew it when it came from the store (else None)."""
        plan = job.plan
        tree_id = self.tree_id(job)
        options = plan.options
        if options.tree_id is not None and options.tree_id != tree_id:
            raise SearchRequestError("search.tree_id: that tree was grown for another prompt, model or search "
                                     "parameters; resend the request that created it.", "search.tree_id")
        if not options.cache:
            return await self._grow(job, tree_id, None, options.budget_tokens, store=False), tree_id, None
        entry = await self.tree_store.get(tree_id)
        stored = answer_from_store(entry, plan)
        if stored is not None:
            metrics.SEARCHES.labels(plan.strategy, "cached").inc()
            return stored, tree_id, entry.get("grown_by", "unknown")
        async with self.tree_store.lock(tree_id):
            if not self.tree_store.available:
                metrics.SEARCHES_UNCACHED.inc()
            entry = await self.tree_store.get(tree_id)
            stored = answer_from_store(entry, plan)
            if stored is not None:
                metrics.SEARCHES.labels(plan.strategy, "cached").inc()
                return stored, tree_id, entry.get("grown_by", "unknown")
            # A larger budget continues a resumable strategy's tree instead of growing it anew;
            # budget_tokens is the tree's total, so the continuation may spend only the difference.
            grown, spent = None, 0
            if entry and STRATEGIES[plan.strategy].resumable:
                grown, spent = Tree.from_dict(entry["tree"]), entry.get("spent_tokens", 0)
            budget = None if options.budget_tokens is None else max(1, options.budget_tokens - spent)
            result = await self._grow(job, tree_id, grown, budget, store=True, spent_before=spent)
        return result, tree_id, None

    def tree_id(self, job: SearchJob) -> str:
        """What shapes the tree: the model, the strategy's parameters, the sampling the request
        asked for (structured outputs, logit bias, ...) and the prompt."""
        sampling = job.sampling
        shaping = {**asdict(job.plan.params), "max_tokens": job.max_tokens, "stop": list(job.stop),
                   "seed": sampling.seed, "request": repr(sampling_key(sampling))}
        if job.plan.strategy == "critic" and self.critic is not None:
            shaping["critic_model"] = self.critic.fingerprint
        return tree_key(self.tree_secret, self.generator.fingerprint, job.plan.strategy, shaping, list(job.prompt_ids),
                        job.scope)

    def stop_searches(self, reason: str) -> None:
        """Every running search answers now with the best it has (the server is shutting down)."""
        now = time.monotonic()
        for budget in self.running_budgets:
            budget.stop_at(now, reason)

    def deadline(self, options: ServingOptions) -> float | None:
        """When a search starting now must answer: its deadline_s, at most --max-search-seconds."""
        limits = [limit for limit in (options.deadline_s, self.max_search_seconds) if limit is not None]
        return time.monotonic() + min(limits) if limits else None

    async def _grow(self, job: SearchJob, tree_id: str, tree: Tree | None, budget_tokens: int | None,
                    store: bool, spent_before: int = 0) -> SearchResult:
        """Runs the search on its feed, stores its tree when `store`, then says it is done there."""
        self.feeds.start(tree_id, job.scope, {"strategy": job.plan.strategy, "model": job.model,
                                              "question": job.question, "resumed": tree is not None})
        try:
            result = await self._search(job, lambda event: self.feeds.publish(tree_id, {"type": "progress", **event}),
                                        tree, budget_tokens)
            if store:
                await self.tree_store.put(tree_id, stored_entry(result, job, spent_before + result.usage.completion_tokens))
        except BaseException as exc:
            self.feeds.publish(tree_id, {"type": "done", "error": type(exc).__name__})
            raise
        self.feeds.publish(tree_id, {"type": "done", "stored": store, "truncated": result.truncated,
                                     "answer": result.chosen.answer,
                                     "completion_tokens": result.usage.completion_tokens})
        return result

    async def _search(self, job: SearchJob, progress: Callable[[dict], None], tree: Tree | None,
                      budget_tokens: int | None) -> SearchResult:
        plan = job.plan
        budget = Budget(max_tokens=budget_tokens, deadline=self.deadline(plan.options))
        generator = MeteredGenerator(self.generator.for_request(job.sampling, job.request_id), budget)
        ctx = SearchContext(
            question=job.question, prompt_ids=list(job.prompt_ids), generator=generator,
            answers=job.answer_extractor(), scorer=plan.scorer,
            critic=self.step_critic(generator) if plan.strategy == "critic" else None,
            progress=progress, max_tokens=job.max_tokens, seed=job.sampling.seed, stop=job.stop,
        )
        started = time.monotonic()
        metrics.SEARCHES_IN_FLIGHT.inc()
        self.running_budgets.add(budget)
        outcome = "error"
        try:
            run = STRATEGIES[plan.strategy].run
            result = await (run(ctx, plan.params, tree=tree) if tree is not None else run(ctx, plan.params))
            outcome = "truncated" if result.truncated else "ok"
            return result
        except asyncio.CancelledError:
            outcome = None  # counted by run(), which also sees cancellations outside the strategy
            raise
        except ValueError as exc:  # the engine refused one of the search's requests (too long a prompt, ...)
            raise SearchRequestError(f"The search could not run: {exc}") from exc
        finally:
            self.running_budgets.discard(budget)
            metrics.SEARCHES_IN_FLIGHT.dec()
            if outcome is not None:
                metrics.SEARCHES.labels(plan.strategy, outcome).inc()
            metrics.SEARCH_LATENCY.labels(plan.strategy).observe(time.monotonic() - started)
            metrics.ENGINE_CALLS.labels(plan.strategy).inc(generator.usage.engine_calls)
            metrics.GENERATED_TOKENS.labels("search").inc(generator.usage.completion_tokens)

    def step_critic(self, actor: MeteredGenerator) -> PromptedStepCritic:
        """The actor model as its own critic, or the --critic-model under the request's budget."""
        if self.critic is None:
            return PromptedStepCritic()
        return PromptedStepCritic(MeteredGenerator(self.critic, actor.budget, actor.usage))


# The request's own sampling fields that shape the samples of its search (the search sets the
# rest: server.engine.SEARCH_OWNED_FIELDS).
SHAPING_SAMPLING_FIELDS = ("presence_penalty", "frequency_penalty", "repetition_penalty", "min_p", "min_tokens",
                           "stop_token_ids", "bad_words", "logit_bias", "allowed_token_ids", "structured_outputs",
                           "include_stop_str_in_output", "skip_special_tokens", "thinking_token_budget")


def sampling_key(sampling: SamplingParams) -> dict[str, Any]:
    key = {name: getattr(sampling, name, None) for name in SHAPING_SAMPLING_FIELDS}
    if dataclasses.is_dataclass(key["structured_outputs"]):
        key["structured_outputs"] = {name: value for name, value in asdict(key["structured_outputs"]).items()
                                     if not name.startswith("_")}
    return key


SHUTTING_DOWN = "server shutting down"
CUT_BY_TIME = ("deadline reached", SHUTTING_DOWN)


def truncated_reason(result: SearchResult) -> str | None:
    """Why a truncated search stopped ("deadline reached", "token budget spent", ...)."""
    if not result.truncated:
        return None
    reasons = [step["reason"] for step in result.trace or () if step.get("step") == "truncated"]
    return reasons[-1] if reasons else "an answer cut at its max_tokens"


def stored_entry(result: SearchResult, job: SearchJob, spent_tokens: int) -> dict:
    chosen = result.chosen
    return {
        "tree": result.tree, "strategy": result.strategy, "budget_tokens": job.plan.options.budget_tokens,
        "spent_tokens": spent_tokens, "grown_by": REPLICA, "scope": job.scope,
        "model": job.model, "question": job.question, "created": round(time.time(), 3),
        "truncated_reason": truncated_reason(result),
        "truncated": result.truncated, "selected_index": result.selected_index,
        "candidates": len(result.candidates), "usage": asdict(result.usage), "trace": result.trace,
        "greedy": result.greedy.report() if result.greedy is not None else None,
        "answer": {"text": chosen.sample.text, "token_ids": chosen.sample.token_ids,
                   "finish_reason": chosen.sample.finish_reason, "answer": chosen.answer,
                   "score": chosen.score, "votes": chosen.votes},
    }


def answer_from_store(entry: dict | None, plan: SearchPlan) -> SearchResult | None:
    """The stored search's answer, if it is what this request would compute: a finished search,
    or one cut short by a budget no larger than this request's."""
    if entry is None:
        return None
    budget_tokens = plan.options.budget_tokens
    if entry["truncated"] and (budget_tokens is None or (entry["budget_tokens"] or 0) < budget_tokens):
        return None
    if entry.get("truncated_reason") in CUT_BY_TIME:
        return None  # cut by time, not by its budget: another run may grow it further
    answer = entry["answer"]
    sample = Sample(token_ids=answer["token_ids"], text=answer["text"], logprobs=[],
                    finish_reason=answer["finish_reason"])
    chosen = Candidate(sample, answer["answer"], answer["score"], answer["votes"])
    # Nothing was generated for this request; the candidates are in the stored tree.
    greedy = entry.get("greedy")
    return SearchResult(entry["strategy"], chosen, entry["selected_index"], [chosen] * entry["candidates"],
                        Usage(), entry["truncated"], entry["tree"], entry["trace"],
                        greedy=GreedyAnchor(index=entry["selected_index"], **greedy) if greedy else None)
