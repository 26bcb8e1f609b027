"""Serving a request that carries a `search`: validate it, run the strategy on the engine,
answer with the chosen candidate, a `search` report and usage that counts every token."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from scorers import SCORERS, MathAnswers, PromptedStepCritic
from search import STRATEGIES, parse_params
from search.params import CommonParams, StepParams
from search.tree import Tree
from search.types import (
    Budget, Candidate, InvalidSearchParam, MeteredGenerator, Sample, Scorer, SearchContext, SearchResult,
    Usage,
)
from server import metrics
from server.errors import APIError, error_body
from server.protocol import (
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionResponse,
    CompletionChoice, CompletionChunk, CompletionResponse, DeltaMessage, SearchReport,
)
from server.tree_store import is_tree_id, tree_key
from server.serving import EventStream, ServedModel, ServerState, cancel_on_disconnect, sse, usage_info

# Per-sample cap when the client gives no max_tokens: a search multiplies every sample's length.
DEFAULT_SEARCH_MAX_TOKENS = 512


@dataclass
class SearchPlan:
    strategy: str
    params: CommonParams
    budget_tokens: int | None
    return_trace: bool
    use_cache: bool = True
    tree_id: str | None = None
    scorer: Scorer | None = None


def effective_search(requested: dict | None, served: ServedModel) -> dict | None:
    """The request's `search` over the alias's (or model default's), or None for plain serving."""
    if served.search is None:
        return requested
    return {**served.search, **(requested or {})}


def plan_search(state: ServerState, search: dict[str, Any], n: int) -> SearchPlan:
    try:
        params = parse_params(None, search)
    except InvalidSearchParam as exc:
        raise APIError(f"{exc.param}: {exc.message}", 400, exc.param) from exc
    if n != 1:
        raise APIError("n must be 1 when a search is asked; the search's own width is search.n.", 400, "n")
    if params.scorer is not None and params.scorer not in SCORERS:
        raise APIError(f"search.scorer: unknown scorer {params.scorer!r}; known: {', '.join(SCORERS)}",
                       400, "search.scorer")
    scorer = SCORERS[params.scorer]() if params.scorer is not None else None
    if scorer is not None and scorer.token_self_certainty and not state.generator.records_self_certainty:
        # No recorder in this engine (speculative decoding): the best top-k estimate instead, or
        # for a step search, whose tree keeps no top-k logprobs, P(True).
        scorer = SCORERS["p_true" if isinstance(params, StepParams) else "self_certainty_tail"]()
    if scorer is not None:
        limit = state.generator.max_logprobs
        if scorer.full_vocab and limit != -1:
            raise APIError(f"search.scorer: {params.scorer} needs full-vocabulary logprobs; start the "
                           "server with --max-logprobs -1.", 400, "search.scorer")
        if limit != -1 and (scorer.logprobs_needed or 0) > limit:
            raise APIError(f"search.scorer: {params.scorer} needs {scorer.logprobs_needed} logprobs per token; "
                           f"start the server with --max-logprobs {scorer.logprobs_needed}.", 400, "search.scorer")
    budget = search.get("budget_tokens")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        raise APIError(f"search.budget_tokens: must be a positive integer, got {budget!r}", 400, "search.budget_tokens")
    trace = search.get("return_trace", False)
    if not isinstance(trace, bool):
        raise APIError(f"search.return_trace: must be true or false, got {trace!r}", 400, "search.return_trace")
    use_cache = search.get("cache", True)
    if not isinstance(use_cache, bool):
        raise APIError(f"search.cache: must be true or false, got {use_cache!r}", 400, "search.cache")
    tree_id = search.get("tree_id")
    if tree_id is not None and not is_tree_id(tree_id):
        raise APIError(f"search.tree_id: not a tree id: {tree_id!r}", 400, "search.tree_id")
    return SearchPlan(search["strategy"], params, budget, trace, use_cache, tree_id, scorer)


@dataclass
class Served:
    """A search's outcome as served: fresh from the engine or from the tree store."""

    result: SearchResult
    tree_id: str
    cache_hit: bool


async def execute(state: ServerState, plan: SearchPlan, question: str, prompt_ids: list[int],
                  max_tokens: int, seed: int | None, stop: tuple[str, ...], progress=None) -> Served:
    """Answer from the stored tree when it already holds this search, else run it (under the
    tree's lock, so replicas sharing Redis don't grow it twice) and store what it grew."""
    try:
        return await _serve_search(state, plan, question, prompt_ids, max_tokens, seed, stop, progress)
    except asyncio.CancelledError:
        metrics.SEARCHES.labels(plan.strategy, "cancelled").inc()
        raise


async def _serve_search(state: ServerState, plan: SearchPlan, question: str, prompt_ids: list[int],
                        max_tokens: int, seed: int | None, stop: tuple[str, ...], progress) -> Served:
    shaping = {**asdict(plan.params), "max_tokens": max_tokens, "stop": list(stop), "seed": seed}
    if plan.strategy == "critic" and state.critic_generator is not None:
        shaping["critic_model"] = state.critic_generator.fingerprint
    tree_id = tree_key(state.generator.fingerprint, plan.strategy, shaping, prompt_ids)
    if plan.tree_id is not None and plan.tree_id != tree_id:
        raise APIError("search.tree_id: that tree was grown for another prompt, model or search parameters; "
                       "resend the request that created it.", 400, "search.tree_id")
    if not plan.use_cache:
        result = await run_strategy(state, plan, question, prompt_ids, max_tokens, seed, stop, progress,
                                    budget_tokens=plan.budget_tokens)
        return Served(result, tree_id, False)
    stored = answer_from_store(await state.tree_store.get(tree_id), plan)
    if stored is not None:
        metrics.SEARCHES.labels(plan.strategy, "cached").inc()
        return Served(stored, tree_id, True)
    async with state.tree_store.lock(tree_id):
        entry = await state.tree_store.get(tree_id)
        stored = answer_from_store(entry, plan)
        if stored is not None:
            metrics.SEARCHES.labels(plan.strategy, "cached").inc()
            return Served(stored, tree_id, True)
        # A larger budget continues a resumable strategy's tree instead of growing it anew;
        # budget_tokens is the tree's total, so the continuation may spend only the difference.
        grown, spent = None, 0
        if entry and STRATEGIES[plan.strategy].resumable:
            grown, spent = Tree.from_dict(entry["tree"]), entry.get("spent_tokens", 0)
        budget = None if plan.budget_tokens is None else max(1, plan.budget_tokens - spent)
        result = await run_strategy(state, plan, question, prompt_ids, max_tokens, seed, stop, progress,
                                    grown, budget)
        await state.tree_store.put(tree_id, stored_entry(result, plan, spent + result.usage.completion_tokens))
    return Served(result, tree_id, False)


def stored_entry(result: SearchResult, plan: SearchPlan, spent_tokens: int) -> dict:
    chosen = result.the_one
    return {
        "tree": result.tree, "strategy": result.strategy, "budget_tokens": plan.budget_tokens,
        "spent_tokens": spent_tokens,
        "truncated": result.truncated, "selected_index": result.selected_index,
        "candidates": len(result.candidates), "usage": asdict(result.usage), "trace": result.trace,
        "answer": {"text": chosen.sample.text, "token_ids": chosen.sample.token_ids,
                   "finish_reason": chosen.sample.finish_reason, "answer": chosen.answer,
                   "score": chosen.score, "votes": chosen.votes},
    }


def answer_from_store(entry: dict | None, plan: SearchPlan) -> SearchResult | None:
    """The stored search's answer, if it is what this request would compute: a finished search,
    or one cut short by a budget no larger than this request's."""
    if entry is None:
        return None
    if entry["truncated"] and (plan.budget_tokens is None or (entry["budget_tokens"] or 0) < plan.budget_tokens):
        return None
    answer = entry["answer"]
    sample = Sample(token_ids=answer["token_ids"], text=answer["text"], logprobs=[],
                    finish_reason=answer["finish_reason"])
    chosen = Candidate(sample, answer["answer"], answer["score"], answer["votes"])
    # Nothing was generated for this request; the candidates are in the stored tree.
    return SearchResult(entry["strategy"], chosen, entry["selected_index"], [chosen] * entry["candidates"],
                        Usage(), entry["truncated"], entry["tree"], entry["trace"])


def step_critic(state: ServerState, actor: MeteredGenerator) -> PromptedStepCritic:
    """The actor model as its own critic, or the --critic-model under the request's budget."""
    if state.critic_generator is None:
        return PromptedStepCritic()
    return PromptedStepCritic(MeteredGenerator(state.critic_generator, actor.budget, actor.usage))


async def run_strategy(state: ServerState, plan: SearchPlan, question: str, prompt_ids: list[int],
                       max_tokens: int, seed: int | None, stop: tuple[str, ...], progress,
                       tree: Tree | None = None, budget_tokens: int | None = None) -> SearchResult:
    strategy = plan.strategy
    generator = MeteredGenerator(state.generator, Budget(max_tokens=budget_tokens))
    ctx = SearchContext(
        question=question, prompt_ids=prompt_ids, generator=generator,
        answers=MathAnswers(plan.params.answer_format),
        scorer=plan.scorer,
        critic=step_critic(state, generator) if strategy == "critic" else None,
        progress=progress, max_tokens=max_tokens, seed=seed, stop=stop,
    )
    started = time.monotonic()
    metrics.SEARCHES_IN_FLIGHT.inc()
    outcome = "error"
    try:
        run = STRATEGIES[strategy].run
        result = await (run(ctx, plan.params, tree=tree) if tree is not None else run(ctx, plan.params))
        outcome = "truncated" if result.truncated else "ok"
        return result
    except asyncio.CancelledError:
        outcome = None  # counted by execute(), which also sees cancellations outside the strategy
        raise
    except ValueError as exc:  # the engine refused one of the search's requests (too long a prompt, ...)
        raise APIError(f"The search could not run: {exc}", 400, "search") from exc
    finally:
        metrics.SEARCHES_IN_FLIGHT.dec()
        if outcome is not None:
            metrics.SEARCHES.labels(strategy, outcome).inc()
        metrics.SEARCH_LATENCY.labels(strategy).observe(time.monotonic() - started)
        metrics.ENGINE_CALLS.labels(strategy).inc(generator.usage.engine_calls)
        metrics.GENERATED_TOKENS.labels("search").inc(generator.usage.completion_tokens)


def report(served: Served, plan: SearchPlan, elapsed: float) -> SearchReport:
    result = served.result
    chosen = result.the_one
    return SearchReport(
        strategy=result.strategy, tree_id=served.tree_id, cache_hit=served.cache_hit,
        candidates=len(result.candidates), selected_index=result.selected_index,
        selected_score=chosen.score, vote_share=chosen.votes, answer=chosen.answer,
        answer_tokens=len(chosen.sample.token_ids), truncated=result.truncated, elapsed_s=round(elapsed, 3),
        engine_calls=result.usage.engine_calls, trace=result.trace if plan.return_trace else None,
    )


def search_usage(result: SearchResult):
    u = result.usage
    return usage_info(u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens)


def finish_reason(result: SearchResult) -> str:
    return result.the_one.sample.finish_reason or ("length" if result.truncated else "stop")


def text_pieces(generator, token_ids: list[int], text: str):
    """The answer as token-sized deltas whose concatenation is exactly `text`.

    Each delta decodes only the tokens since the last one (linear, not a decode of the whole
    prefix per token); if a window does not decode to the next stretch of `text` (a tokenizer
    that drops leading spaces, a trimmed stop string), the rest goes out in one piece.
    """
    sent, start = 0, 0
    for end in range(1, len(token_ids) + 1):
        piece = generator.decode(token_ids[start:end])
        if piece.endswith("\ufffd"):  # a multi-byte character still incomplete
            continue
        if not text.startswith(piece, sent):
            break
        if piece:
            yield piece
            sent, start = sent + len(piece), end
    if len(text) > sent:
        yield text[sent:]


def last_user_text(messages) -> str:
    users = [m.text() for m in messages if m.role == "user"]
    return users[-1] if users else messages[-1].text()


async def run_chat_search(state: ServerState, req, request: Request, prompt_ids, max_tokens, search):
    plan = plan_search(state, search, req.n)
    max_tokens = max_tokens if req.max_new_tokens() is not None else min(max_tokens, DEFAULT_SEARCH_MAX_TOKENS)
    args = (state, plan, last_user_text(req.messages), prompt_ids, max_tokens, req.seed, tuple(req.stop_list()))
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    if req.stream:
        return EventStream(stream_search(state, req, request_id, args, chat=True))

    async def answer() -> JSONResponse:
        started = time.monotonic()
        served = await execute(*args)
        result = served.result
        response = ChatCompletionResponse(
            id=request_id, model=req.model,
            choices=[ChatChoice(index=0, message=AssistantMessage(content=result.the_one.sample.text),
                                finish_reason=finish_reason(result))],
            usage=search_usage(result), search=report(served, plan, time.monotonic() - started),
        )
        return JSONResponse(response.model_dump(exclude_none=True))

    return await cancel_on_disconnect(request, answer())


async def run_completion_search(state: ServerState, req, request: Request, prompt_ids, max_tokens, search):
    plan = plan_search(state, search, req.n)
    question = req.prompt if isinstance(req.prompt, str) else state.generator.decode(prompt_ids)
    args = (state, plan, question, prompt_ids, max_tokens, req.seed, tuple(req.stop_list()))
    request_id = f"cmpl-{uuid.uuid4().hex}"
    if req.stream:
        return EventStream(stream_search(state, req, request_id, args, chat=False))

    async def answer() -> JSONResponse:
        started = time.monotonic()
        served = await execute(*args)
        result = served.result
        response = CompletionResponse(
            id=request_id, model=req.model,
            choices=[CompletionChoice(index=0, text=result.the_one.sample.text, finish_reason=finish_reason(result))],
            usage=search_usage(result), search=report(served, plan, time.monotonic() - started),
        )
        return JSONResponse(response.model_dump(exclude_none=True))

    return await cancel_on_disconnect(request, answer())


async def stream_search(state: ServerState, req, request_id: str, args, chat: bool):
    """Progress chunks while the search runs, then the answer as deltas, then usage, then [DONE].
    Closing this generator (the client left) cancels the search and its engine requests."""
    created = int(time.time())
    Chunk = ChatCompletionChunk if chat else CompletionChunk

    def chunk(choices, **extra) -> str:
        return sse(Chunk(id=request_id, created=created, model=req.model, choices=choices, **extra))

    def piece(text="", role=None, reason=None):
        if chat:
            return ChatChunkChoice(index=0, delta=DeltaMessage(role=role, content=text), finish_reason=reason)
        return CompletionChoice(index=0, text=text, finish_reason=reason)

    progress: asyncio.Queue = asyncio.Queue()
    started = time.monotonic()
    task = asyncio.ensure_future(execute(*args, progress=progress.put_nowait))
    try:
        yield chunk([], search={"progress": {"strategy": args[1].strategy, "round": 0, "candidates": 0}})
        while not task.done():
            getter = asyncio.ensure_future(progress.get())
            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield chunk([], search={"progress": getter.result()})
            else:
                getter.cancel()
        try:
            served = task.result()
        except APIError as exc:
            yield sse(error_body(exc.message, exc.status, exc.param))
            yield "data: [DONE]\n\n"
            return
        plan = args[1]
        result = served.result
        sample = result.the_one.sample
        if chat:
            yield chunk([piece(role="assistant")])
        for text in text_pieces(state.generator, sample.token_ids, sample.text):
            yield chunk([piece(text)])
        yield chunk([piece(reason=finish_reason(result))],
                    search=report(served, plan, time.monotonic() - started).model_dump(exclude_none=True))
        if req.stream_options and req.stream_options.include_usage:
            yield chunk([], usage=search_usage(result))
        yield "data: [DONE]\n\n"
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
