"""POST /v1/chat/completions: plain generation as vLLM serves it, or a search when asked."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from vllm.outputs import RequestOutput

from server import metrics
from server.errors import APIError
from server.protocol import (
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionRequest,
    ChatCompletionResponse, ChoiceLogprobs, DeltaMessage, ErrorResponse, TokenLogprob,
)
from server.search_serving import effective_search, run_chat_search
from server.serving import (
    EventStream,
    ServerState, cancel_on_disconnect, check_context, clamp, sampling_params, sse, state_of,
    token_string, top_logprobs, usage_info,
)

router = APIRouter()
ERRORS = {400: {"model": ErrorResponse}, 404: {"model": ErrorResponse}}


def chat_prompt(state: ServerState, req: ChatCompletionRequest) -> list[int]:
    messages = [{"role": m.role, "content": m.text()} for m in req.messages]
    try:
        return state.generator.chat_prompt_ids(messages)
    except Exception as exc:  # jinja template errors: the messages do not fit the model's template
        raise APIError(f"The messages cannot be rendered with the model's chat template: {exc}", 400, "messages") from exc


def chat_logprobs(state: ServerState, token_ids, logprobs, k: int) -> ChoiceLogprobs:
    content = []
    for token_id, position in zip(token_ids, logprobs or []):
        chosen = position[token_id]
        token = token_string(state.generator, token_id, chosen)
        content.append(TokenLogprob(
            token=token, logprob=clamp(chosen.logprob), bytes=list(token.encode("utf-8", errors="replace")),
            top_logprobs=top_logprobs(state.generator, position, k),
        ))
    return ChoiceLogprobs(content=content)


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse, responses=ERRORS)
async def create_chat_completion(req: ChatCompletionRequest, request: Request):
    state = state_of(request)
    served = state.resolve(req.model)
    prompt_ids = chat_prompt(state, req)
    max_tokens = check_context(len(prompt_ids), req.max_new_tokens(), state.generator.max_model_len, "messages")
    search = effective_search(req.search, served)
    if search is not None:
        return await run_chat_search(state, req, request, prompt_ids, max_tokens, search)
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    params = sampling_params(state, req, max_tokens, logprobs, stream=req.stream)
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    outputs = state.generator.stream(prompt_ids, params, request_id)
    if req.stream:
        return EventStream(
            stream_chat(state, req, request_id, len(prompt_ids), outputs))
    return await cancel_on_disconnect(request, complete_chat(state, req, request_id, outputs))


async def complete_chat(state: ServerState, req, request_id: str, outputs) -> JSONResponse:
    final: RequestOutput | None = None
    async for final in outputs:
        pass
    assert final is not None
    k = req.top_logprobs or 0
    choices = [
        ChatChoice(
            index=o.index, message=AssistantMessage(content=o.text),
            logprobs=chat_logprobs(state, o.token_ids, o.logprobs, k) if req.logprobs else None,
            finish_reason=o.finish_reason, stop_reason=o.stop_reason,
        )
        for o in sorted(final.outputs, key=lambda o: o.index)
    ]
    generated = sum(len(o.token_ids) for o in final.outputs)
    metrics.GENERATED_TOKENS.labels("plain").inc(generated)
    response = ChatCompletionResponse(
        id=request_id, model=req.model, choices=choices,
        usage=usage_info(len(final.prompt_token_ids or []), generated, final.num_cached_tokens or 0),
    )
    return JSONResponse(response.model_dump(exclude_none=True))


async def stream_chat(state: ServerState, req, request_id: str, prompt_len: int, outputs):
    created = int(time.time())
    k = req.top_logprobs or 0

    def chunk(choices, usage=None) -> str:
        return sse(ChatCompletionChunk(id=request_id, created=created, model=req.model, choices=choices, usage=usage))

    for index in range(req.n):
        yield chunk([ChatChunkChoice(index=index, delta=DeltaMessage(role="assistant", content=""))])
    generated = cached = 0
    try:
        async for output in outputs:
            cached = output.num_cached_tokens or cached
            for o in output.outputs:
                generated += len(o.token_ids)
                if not o.text and not o.finish_reason and not o.token_ids:
                    continue
                yield chunk([ChatChunkChoice(
                    index=o.index, delta=DeltaMessage(content=o.text),
                    logprobs=chat_logprobs(state, o.token_ids, o.logprobs, k) if req.logprobs else None,
                    finish_reason=o.finish_reason, stop_reason=o.stop_reason,
                )])
    except APIError as exc:
        yield sse({"error": {"message": exc.message, "type": "BadRequestError", "param": exc.param, "code": exc.status}})
    finally:
        await outputs.aclose()
        metrics.GENERATED_TOKENS.labels("plain").inc(generated)
    if req.stream_options and req.stream_options.include_usage:
        yield chunk([], usage_info(prompt_len, generated, cached))
    yield "data: [DONE]\n\n"
