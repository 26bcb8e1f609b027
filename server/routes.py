"""deliberate's HTTP routes on vLLM's own OpenAI server.

A request with no search (no `search` field, no alias, no default search) goes to vLLM's own
route, untouched. A searched request goes through vLLM's own serving object too (a copy of
it whose engine client runs the search): vLLM renders the prompt and derives the sampling
parameters from the request, the search service searches, and the chosen candidate comes back
to vLLM as the engine's output, so the tool and reasoning parsers and the response models are
vLLM's. The route then adds the `search` report and `usage` that counts every token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from vllm.entrypoints.openai.chat_completion import api_router as vllm_chat
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest as VLLMChatRequest
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionResponse
from vllm.entrypoints.openai.completion import api_router as vllm_completion
from vllm.entrypoints.openai.completion.protocol import CompletionRequest as VLLMCompletionRequest
from vllm.entrypoints.openai.completion.protocol import CompletionResponse
from vllm.entrypoints.serve.engine.protocol import ErrorResponse, ModelCard, ModelList, UsageInfo
from vllm.entrypoints.serve.exception_handling.error_response import create_error_response
from vllm.entrypoints.serve.exception_handling.handlers.vllm_error import vllm_error_handler
from vllm.entrypoints.serve.utils.api_utils import validate_json_request, with_cancellation
from vllm.exceptions import VLLMNotFoundError
from vllm.outputs import CompletionOutput, RequestOutput
from vllm.renderers.inputs.preprocess import extract_prompt_components
from vllm.sampling_params import RequestOutputKind, SamplingParams
from vllm.v1.engine.exceptions import EngineDeadError

from scorers import MathAnswers, StructuredAnswers
from search.params import StepParams
from search.types import AnswerExtractor, shown
from server.admission import SearchRejected
from server.search_schema import SearchField
from server.search_service import (
    DEFAULT_SEARCH_MAX_TOKENS, SearchJob, SearchOutcome, SearchPlan, SearchRequestError, SearchService,
)
from server.tree_feed import TreeFeeds
from server.tracing import search_span
from server.tree_store import is_tree_id

access_log = logging.getLogger("deliberate.access")
ERRORS = {400: {"model": ErrorResponse}, 404: {"model": ErrorResponse}}
# What admission and the body guard answer: a body over --max-request-bytes, a full search queue
# (429) and a server shutting down (503), the last two with Retry-After.
REFUSALS = {413: {"model": ErrorResponse}, 429: {"model": ErrorResponse}, 503: {"model": ErrorResponse}}
STREAMED = {200: {"content": {"text/event-stream": {}}}}
CLIENT_LEFT = 499  # the access log's status of a request whose client went away (nginx's)
MAX_LISTED_TREES = 200
FEED_WAIT_S = 5.0  # a page opened as its search is sent: its feed starts moments later
FEED_POLL_S = 0.2
FEED_IDLE_S = 600.0  # a feed reader with nothing new for this long is ended


class ChatCompletionRequest(VLLMChatRequest):
    search: SearchField | None = None


class CompletionRequest(VLLMCompletionRequest):
    search: SearchField | None = None


@dataclass
class SearchCall:
    """One client request's search between the route and the engine side: the route sets the
    plan, the engine side (inside vLLM's serving object) runs it and leaves the outcome."""

    plan: SearchPlan
    question: str
    max_tokens_given: bool
    answers: AnswerExtractor | None = None  # None: the service chooses by the request's sampling
    scope: str = ""
    model: str = ""  # as the client asked
    outcome: SearchOutcome | None = None
    request_id: str | None = None  # vLLM's id of the request; the search's engine requests extend it
    tree_id: str | None = None  # set with the request id, before the search starts
    viewer_url: str | None = None  # the tree viewer page of tree_id
    started: float = field(default_factory=time.monotonic)

    def report(self) -> dict[str, Any]:
        """The response's `search` object: the outcome's report and the page that draws its tree."""
        return {**self.outcome.report(self.plan.options.return_trace), "viewer_url": self.viewer_url}

    def log(self, status: int) -> None:
        """The search's access-log line: request id, status, strategy, tokens, latency."""
        outcome = self.outcome
        access_log.info(
            "%s status=%d strategy=%s cache_hit=%s completion_tokens=%s engine_calls=%s latency_s=%.3f",
            self.request_id or "-", status, self.plan.strategy, outcome.cache_hit if outcome else "-",
            outcome.result.usage.completion_tokens if outcome else "-",
            outcome.result.usage.engine_calls if outcome else "-", time.monotonic() - self.started)


ACTIVE_SEARCH: ContextVar[SearchCall | None] = ContextVar("deliberate_search", default=None)


class SearchingEngineClient:
    """vLLM's engine client as deliberate's copy of vLLM's serving objects sees it: `generate`
    runs the active search and answers with its chosen candidate as the engine's output."""

    def __init__(self, engine_client, service: SearchService):
        self.engine_client = engine_client
        self.service = service

    def __getattr__(self, name):
        return getattr(self.engine_client, name)

    def generate(self, prompt, sampling_params, request_id: str, **kwargs) -> AsyncIterator[RequestOutput]:
        call = ACTIVE_SEARCH.get()
        if call is None:
            return self.engine_client.generate(prompt, sampling_params, request_id, **kwargs)
        check_sampling(sampling_params, call.plan)
        prompt_ids = extract_prompt_components(self.engine_client.model_config, prompt).token_ids
        max_tokens = sampling_params.max_tokens
        if not call.max_tokens_given:
            max_tokens = min(max_tokens, DEFAULT_SEARCH_MAX_TOKENS)
        call.request_id = request_id
        job = SearchJob(call.plan, call.question, tuple(prompt_ids), sampling_params, max_tokens, request_id,
                        call.answers, call.scope, call.model)
        call.tree_id = self.service.tree_id(job)
        return self._answer(call, job, kwargs.get("trace_headers"))

    async def _answer(self, call: SearchCall, job: SearchJob, trace_headers) -> AsyncIterator[RequestOutput]:
        with search_span(self.service.generator.tracer, trace_headers,
                         {"deliberate.strategy": call.plan.strategy, "deliberate.tree_id": call.tree_id}):
            call.outcome = await self.service.run(job)
        delta = job.sampling.output_kind == RequestOutputKind.DELTA
        for output in answer_outputs(self.service.generator, call.outcome, job, delta):
            yield output


def check_sampling(sampling: SamplingParams, plan: SearchPlan) -> None:
    """What a search cannot honour, in the sampling parameters vLLM derived from the request."""
    if sampling.logprobs is not None or sampling.prompt_logprobs is not None:
        raise SearchRequestError("logprobs and prompt_logprobs are not returned for a searched answer; drop them "
                                 "or the search.", "logprobs")
    if sampling.structured_outputs is not None and isinstance(plan.params, StepParams):
        raise SearchRequestError("structured outputs (response_format, structured_outputs, a required or named "
                                 "tool_choice) constrain a whole answer, not its steps: use a candidate strategy "
                                 "such as self_consistency, not a step search.", "search.strategy")


def answer_outputs(generator, outcome: SearchOutcome, job: SearchJob, delta: bool) -> list[RequestOutput]:
    """The chosen candidate as the engine would have returned it: one final output, or
    token-sized deltas for a stream."""
    result = outcome.result
    sample = result.chosen.sample
    finish = sample.finish_reason or ("length" if result.truncated else "stop")
    pieces = list(answer_pieces(generator, sample.token_ids, sample.text)) if delta else [(sample.text, sample.token_ids)]
    pieces = pieces or [("", [])]
    prompt_text = generator.decode(job.prompt_ids)  # for `echo` and `return_prompt_text`
    outputs = []
    for position, (text, ids) in enumerate(pieces):
        last = position == len(pieces) - 1
        choice = CompletionOutput(index=0, text=text, token_ids=list(ids), cumulative_logprob=None, logprobs=None,
                                  finish_reason=finish if last else None,
                                  stop_reason=sample.stop_reason if last else None)
        outputs.append(RequestOutput(job.request_id, prompt_text, list(job.prompt_ids), None, [choice],
                                     finished=last, num_cached_tokens=0))
    return outputs


def answer_pieces(generator, token_ids: list[int], text: str):
    """(text, token ids) deltas whose texts add up to exactly `text`.

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
            yield piece, token_ids[start:end]
            sent, start = sent + len(piece), end
    if len(text) > sent or start < len(token_ids):
        yield text[sent:], token_ids[start:]


router = APIRouter()


@router.post("/v1/chat/completions", dependencies=[Depends(validate_json_request)], responses={**STREAMED, **ERRORS, **REFUSALS})
async def create_chat_completion(request: ChatCompletionRequest, raw_request: Request):
    deliberate = raw_request.app.state.deliberate
    deliberate.admission.refuse_if_closed()
    search = deliberate.effective_search(request.model, request.search, request.reasoning_effort)
    if search is None:
        return await vllm_chat.create_chat_completion(request, raw_request)
    refuse_beam_search(request)
    plan = deliberate.service.plan(search, request.n, request.max_completion_tokens or request.max_tokens)
    answers = None
    if request.tools and deliberate.chat.parser_cls is not None:
        parser = deliberate.chat._make_parser(request, deliberate.service.generator.tokenizer,
                                              deliberate.chat._effective_chat_template_kwargs(request))
        answers = ToolCallAnswers(parser, request, StructuredAnswers() if request.response_format is not None
                                  else MathAnswers(plan.params.answer_format))
    call = SearchCall(plan, last_user_text(request.messages),
                      request.max_completion_tokens is not None or request.max_tokens is not None, answers,
                      deliberate.service.scope_for(api_key(raw_request)), request.model)
    return await searched(request, raw_request, call, deliberate.chat.create_chat_completion)


class ToolCallAnswers:
    """Votes over what the client will use when the request offers tools: the tool calls that
    vLLM's tool parser finds in a candidate (by function name and canonical arguments), else
    the final answer in its text."""

    PREFIX = "tool_calls:"

    def __init__(self, parser, request, text_answers: AnswerExtractor):
        self.parser = parser
        self.request = request
        self.text_answers = text_answers

    def extract(self, text: str) -> str | None:
        found = self.parser.extract_tool_calls(text, self.request)
        if not found.tools_called:
            return self.text_answers.extract(text)
        calls = [[call.function.name, canonical_json(call.function.arguments)] for call in found.tool_calls]
        return self.PREFIX + json.dumps(calls, sort_keys=True, separators=(",", ":"))

    def equivalent(self, a: str, b: str) -> bool:
        if a.startswith(self.PREFIX) or b.startswith(self.PREFIX):
            return a == b
        return self.text_answers.equivalent(a, b)


def canonical_json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


@router.post("/v1/completions", dependencies=[Depends(validate_json_request)], responses={**STREAMED, **ERRORS, **REFUSALS})
async def create_completion(request: CompletionRequest, raw_request: Request):
    deliberate = raw_request.app.state.deliberate
    deliberate.admission.refuse_if_closed()
    search = deliberate.effective_search(request.model, request.search)
    if search is None:
        return await vllm_completion.create_completion(request, raw_request)
    prompt = request.prompt
    if not (isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], int))):
        if not (isinstance(prompt, list) and len(prompt) == 1):
            raise SearchRequestError("A search takes exactly one prompt.", "prompt")
        prompt = prompt[0]
    refuse_beam_search(request)
    question = prompt if isinstance(prompt, str) else deliberate.service.generator.decode(prompt)
    call = SearchCall(deliberate.service.plan(search, request.n, request.max_tokens), question,
                      request.max_tokens is not None, scope=deliberate.service.scope_for(api_key(raw_request)),
                      model=request.model)
    return await searched(request, raw_request, call, deliberate.completion.create_completion)


def api_key(raw_request: Request) -> str | None:
    """The bearer token the client sent (vLLM's --api-key check has already passed)."""
    scheme, _, token = raw_request.headers.get("authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def refuse_beam_search(request) -> None:
    if request.use_beam_search:
        raise SearchRequestError("use_beam_search is vLLM's own search; drop it or the `search`.", "use_beam_search")


@with_cancellation
async def searched(request, raw_request: Request, call: SearchCall, serve):
    """`serve` (vLLM's own serving method, on the copy whose engine searches) answers `request`;
    then the report and usage. A client that leaves cancels the search and its engine requests."""
    deliberate = raw_request.app.state.deliberate
    asked_model = request.model
    request.model = deliberate.root_name
    async with contextlib.AsyncExitStack() as admitted:
        # Held until the answer is out: a stream searches while it is read.
        await admitted.enter_async_context(deliberate.admission.admit(call.plan.params.n))
        token = ACTIVE_SEARCH.set(call)
        try:
            response = await serve(request, raw_request)
        except asyncio.CancelledError:
            call.log(CLIENT_LEFT)
            raise
        except Exception as exc:
            call.log(create_error_response(exc).error.code)
            raise
        finally:
            ACTIVE_SEARCH.reset(token)
        if call.tree_id is not None:
            call.viewer_url = str(raw_request.url_for("tree_page", tree_id=call.tree_id))
        if isinstance(response, ErrorResponse):
            # vLLM's serving object answers a request cancelled under it (the client left,
            # with_cancellation cancelled this task) with a 400 "Client disconnected".
            call.log(CLIENT_LEFT if asyncio.current_task().cancelling() else response.error.code)
            return JSONResponse(response.model_dump(), status_code=response.error.code)
        if isinstance(response, (ChatCompletionResponse, CompletionResponse)):
            body = response.model_dump()
            body.update(model=asked_model, usage=search_usage(call.outcome).model_dump(), search=call.report())
            call.log(200)
            return JSONResponse(body)
        chunk_object = "chat.completion.chunk" if isinstance(request, VLLMChatRequest) else "text_completion"
        return AdmittedStream(stream_with_search(response, call, asked_model, chunk_object, deliberate.service.feeds),
                              admitted.pop_all())


class AdmittedStream(StreamingResponse):
    """A searched stream that gives its admission back when the response ends, however it ends
    (also if the client left before the first byte, when the stream body never starts)."""

    def __init__(self, content: AsyncIterator[str], admitted: contextlib.AsyncExitStack):
        super().__init__(content, media_type="text/event-stream")
        self.admitted = admitted

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.admitted.aclose()


async def search_rejected(request: Request, exc: SearchRejected) -> JSONResponse:
    error = create_error_response(exc)
    # Shutting down (503), CloseConnectionsWhileDraining adds `Connection: close`.
    return JSONResponse(error.model_dump(), status_code=error.error.code,
                        headers={"Retry-After": str(exc.retry_after_s)})


class CloseConnectionsWhileDraining:
    """ASGI middleware: once the server is shutting down, every response says `Connection: close`.
    A keep-alive connection left idle would be closed by the HTTP server as it stops, racing a
    request the client sends on it at that moment: the client sees no answer (the soak found
    one). Closed after each response, the client's next request opens a new connection, which
    is answered (a 503 to retry elsewhere) or refused, never dropped."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_closing(message):
            if message["type"] == "http.response.start" and draining(scope):
                headers = [(name, value) for name, value in message.get("headers", []) if name.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)


def draining(scope) -> bool:
    deliberate = getattr(scope["app"].state, "deliberate", None) if "app" in scope else None
    return deliberate is not None and deliberate.admission.closed


async def engine_stopped(request: Request, exc: EngineDeadError) -> JSONResponse:
    """A request the engine dropped as the server shuts down (vLLM's --shutdown-timeout 0 aborts
    what runs) was never answered: a 503 to retry elsewhere. Otherwise the engine died: vLLM's answer."""
    deliberate = getattr(request.app.state, "deliberate", None)
    if deliberate is not None and deliberate.admission.closed:
        return await search_rejected(request, SearchRejected.shutting_down(deliberate.admission.retry_after_s))
    return await vllm_error_handler(request, exc)


async def stream_with_search(events: AsyncIterator[str], call: SearchCall, model: str, chunk_object: str,
                             feeds: TreeFeeds) -> AsyncIterator[str]:
    """vLLM's event stream of the answer, preceded by progress events while the search runs
    (`choices: []` and `search.progress`, read from the tree's feed as the viewer page reads it);
    the last choice event carries the `search` report, and the usage event counts every token
    the search generated. Closing it (the client left) cancels the search and its engine requests."""
    with feeds.listening(call.tree_id) as feed:
        first = asyncio.ensure_future(anext(events, None))
        try:
            yield progress_event(model, chunk_object, {"strategy": call.plan.strategy, "round": 0, "candidates": 0,
                                                       "tree_id": call.tree_id, "viewer_url": call.viewer_url})
            while not first.done():
                update = asyncio.ensure_future(feed.get())
                await asyncio.wait({first, update}, return_when=asyncio.FIRST_COMPLETED)
                if not update.done():
                    update.cancel()
                elif update.result().get("type") == "progress":
                    progress = {key: value for key, value in update.result().items() if key not in ("type", "at")}
                    yield progress_event(model, chunk_object, progress)
            event = first.result()
            while event is not None:
                yield with_search_fields(event, call, model)
                event = await anext(events, None)
            call.log(200)
        finally:
            if not first.done():
                first.cancel()
                with contextlib.suppress(BaseException):
                    await first
            await events.aclose()


def progress_event(model: str, chunk_object: str, progress: dict) -> str:
    return "data: " + json.dumps({"object": chunk_object, "model": model, "choices": [],
                                  "search": {"progress": progress}}) + "\n\n"


def with_search_fields(event: str, call: SearchCall, model: str) -> str:
    if not event.startswith("data: {"):
        return event
    chunk = json.loads(event[len("data: "):])
    chunk["model"] = model
    if chunk.get("usage") and call.outcome is not None:
        chunk["usage"] = search_usage(call.outcome).model_dump()
    if any(choice.get("finish_reason") for choice in chunk.get("choices") or ()) and call.outcome is not None:
        chunk["search"] = call.report()
    return "data: " + json.dumps(chunk) + "\n\n"


def search_usage(outcome: SearchOutcome) -> UsageInfo:
    usage = outcome.result.usage
    return UsageInfo(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                     total_tokens=usage.prompt_tokens + usage.completion_tokens,
                     prompt_tokens_details={"cached_tokens": usage.cached_prompt_tokens})


def last_user_text(messages: list) -> str:
    """The question, for answer extraction and the scorers' prompts: the last user turn's text.
    A message is a dict, or a model vLLM parsed it into (a harmony `Message`)."""
    messages = [message if isinstance(message, dict) else message.model_dump() if hasattr(message, "model_dump")
                else {} for message in messages]
    users = [message for message in messages if message.get("role") == "user"]
    if not (users or messages):
        return ""  # vLLM renders an empty conversation as it would for a plain request
    content = (users[-1] if users else messages[-1]).get("content")
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


@router.get("/v1/models", response_model=ModelList)
async def list_models(raw_request: Request) -> ModelList:
    """vLLM's list, with each alias as a model of its own and the search it applies."""
    deliberate = raw_request.app.state.deliberate
    models = await raw_request.app.state.openai_serving_models.show_available_models()
    for card in models.data:
        if card.id == deliberate.root_name:
            if deliberate.default_search:
                card.search = deliberate.default_search
            card.reasoning_effort_searches = deliberate.effort_searches
    root = models.data[0]
    for name, spec in deliberate.aliases.items():
        models.data.append(ModelCard(id=name, root=root.root, parent=root.id, max_model_len=root.max_model_len,
                                     owned_by="deliberate", search=spec))
    return models


def checked_tree_id(tree_id: str) -> str:
    if not is_tree_id(tree_id):
        raise SearchRequestError(f"Not a tree id: {shown(tree_id)}.", "tree_id")
    return tree_id


def not_stored(tree_id: str) -> VLLMNotFoundError:
    return VLLMNotFoundError(f"No stored tree {tree_id}: it expired, was evicted, or was never grown here.")


@router.get("/v1/search/trees", response_model=dict[str, Any], responses={400: ERRORS[400]})
async def list_trees(raw_request: Request, limit: Annotated[int, Query(ge=1, le=MAX_LISTED_TREES)] = 50
                     ) -> dict[str, Any]:
    """The trees this server's store holds for the caller's key, the latest grown first."""
    service = raw_request.app.state.deliberate.service
    listed = []
    for tree_id, entry in await service.tree_store.recent(service.scope_for(api_key(raw_request)), limit):
        answer = entry.get("answer") or {}
        listed.append({"id": tree_id, "strategy": entry.get("strategy"), "model": entry.get("model"),
                       "question": entry.get("question"), "answer": answer.get("answer"),
                       "spent_tokens": entry.get("spent_tokens"), "truncated": entry.get("truncated"),
                       "created": entry.get("created"),
                       "viewer_url": str(raw_request.url_for("tree_page", tree_id=tree_id))})
    return {"object": "list", "data": listed}


@router.get("/v1/search/trees/{tree_id}", response_model=dict[str, Any], responses=ERRORS)
async def get_tree(tree_id: str, raw_request: Request) -> dict[str, Any]:
    service = raw_request.app.state.deliberate.service
    entry = await service.tree_store.get(checked_tree_id(tree_id))
    if entry is None or entry.get("scope", "") != service.scope_for(api_key(raw_request)):
        raise not_stored(tree_id)
    return {"id": tree_id, "object": "search.tree", **entry}


@router.get("/v1/search/trees/{tree_id}/events", responses={**STREAMED, **ERRORS})
async def tree_events(tree_id: str, raw_request: Request) -> StreamingResponse:
    """The tree's feed as server-sent events: its latest run so far, then live until `done` (a stored tree with no feed left gets `done` alone)."""
    service = raw_request.app.state.deliberate.service
    scope = service.scope_for(api_key(raw_request))
    checked_tree_id(tree_id)
    waited_until = time.monotonic() + FEED_WAIT_S
    while (events := await service.feeds.follow(tree_id, scope, FEED_IDLE_S)) is None:
        entry = await service.tree_store.get(tree_id)
        if entry is not None and entry.get("scope", "") == scope:
            events = only({"type": "done", "stored": True})
            break
        if time.monotonic() > waited_until:
            raise not_stored(tree_id)
        await asyncio.sleep(FEED_POLL_S)
    return StreamingResponse((f"data: {json.dumps(event)}\n\n" async for event in events),
                             media_type="text/event-stream", headers={"Cache-Control": "no-store"})


async def only(event: dict) -> AsyncIterator[dict]:
    yield event


VIEWER = resources.files("server") / "viewer"
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain"}


@router.get("/trees", response_class=HTMLResponse)
async def tree_index() -> HTMLResponse:
    """The tree viewer's index page (static; it reads /v1/search/trees with the key it is given)."""
    return HTMLResponse((VIEWER / "viewer.html").read_text())


@router.get("/trees/{tree_id}", response_class=HTMLResponse, name="tree_page", responses={400: ERRORS[400]})
async def tree_page(tree_id: str) -> HTMLResponse:
    """The tree viewer page of one tree (static; it reads the tree and its feed with the key it is given)."""
    checked_tree_id(tree_id)
    return HTMLResponse((VIEWER / "viewer.html").read_text())


@router.get("/trees/assets/{name}", include_in_schema=False)
async def tree_asset(name: str) -> PlainTextResponse:
    """The viewer's script and style sheet, from inside the package."""
    asset = VIEWER / name
    suffix = name[name.rfind("."):] if "." in name else ""
    if "/" in name or suffix not in ASSET_TYPES or not asset.is_file():
        raise VLLMNotFoundError(f"No viewer asset {shown(name)}.")
    return PlainTextResponse(asset.read_text(), media_type=ASSET_TYPES[suffix])
