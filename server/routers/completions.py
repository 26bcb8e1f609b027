"""POST /v1/completions: one or many prompts (text or token ids), as vLLM serves them."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from server import metrics
from server.errors import APIError
from server.protocol import (
    CompletionChoice, CompletionChunk, CompletionLogprobs, CompletionRequest, CompletionResponse, ErrorResponse,
)
from server.search_serving import effective_search, run_completion_search
from server.serving import (
    EventStream,
    ServerState, cancel_on_disconnect, check_context, clamp, merge, sampling_params, sse, state_of,
    token_string, usage_info,
)

router = APIRouter()
ERRORS = {400: {"model": ErrorResponse}, 404: {"model": ErrorResponse}}


def prompt_ids_of(state: ServerState, prompt: str | list[int]) -> list[int]:
    if isinstance(prompt, str):
        return list(state.generator.tokenizer.encode(prompt))
    if any(not 0 <= t < state.generator.vocab_size for t in prompt):
        raise APIError(f"Token ids in the prompt must lie in [0, {state.generator.vocab_size}).", 400, "prompt")
    return prompt


def completion_logprobs(state: ServerState, token_ids, logprobs, k: int, offset: int) -> CompletionLogprobs:
    result = CompletionLogprobs()
    for token_id, position in zip(token_ids, logprobs or []):
        token = token_string(state.generator, token_id, position[token_id])
        result.tokens.append(token)
        result.token_logprobs.append(clamp(position[token_id].logprob))
        ranked = sorted(position.items(), key=lambda item: item[1].rank or 0)[:k]
        result.top_logprobs.append({token_string(state.generator, t, lp): clamp(lp.logprob) for t, lp in ranked})
        result.text_offset.append(offset)
        offset += len(token)
    return result


@router.post("/v1/completions", response_model=CompletionResponse, responses=ERRORS)
async def create_completion(req: CompletionRequest, request: Request):
    state = state_of(request)
    served = state.resolve(req.model)
    if req.echo and req.logprobs is not None:
        raise APIError("echo together with logprobs is not supported; drop one of them.", 400, "echo")
    prompts = [prompt_ids_of(state, p) for p in req.prompts()]
    max_tokens = min(check_context(len(ids), req.max_tokens, state.generator.max_model_len, "prompt") for ids in prompts)
    search = effective_search(req.search, served)
    if search is not None:
        if len(prompts) != 1:
            raise APIError("A search takes exactly one prompt.", 400, "prompt")
        return await run_completion_search(state, req, request, prompts[0], max_tokens, search)
    params = sampling_params(state, req, max_tokens, req.logprobs, stream=req.stream)
    request_id = f"cmpl-{uuid.uuid4().hex}"
    streams = [state.generator.stream(ids, params, f"{request_id}-{i}") for i, ids in enumerate(prompts)]
    echoes = [state.generator.decode(ids) if req.echo else "" for ids in prompts]
    if req.stream:
        return EventStream(
            stream_completion(state, req, request_id, prompts, echoes, merge(streams)))
    return await cancel_on_disconnect(request, complete(state, req, request_id, prompts, echoes, merge(streams)))


async def complete(state: ServerState, req, request_id, prompts, echoes, outputs) -> JSONResponse:
    finals = {}
    async for prompt_index, output in outputs:
        finals[prompt_index] = output
    choices, generated, cached = [], 0, 0
    for prompt_index in range(len(prompts)):
        final = finals[prompt_index]
        cached += final.num_cached_tokens or 0
        for o in sorted(final.outputs, key=lambda o: o.index):
            generated += len(o.token_ids)
            choices.append(CompletionChoice(
                index=prompt_index * req.n + o.index, text=echoes[prompt_index] + o.text,
                logprobs=(completion_logprobs(state, o.token_ids, o.logprobs, req.logprobs, 0)
                          if req.logprobs is not None else None),
                finish_reason=o.finish_reason, stop_reason=o.stop_reason,
            ))
    metrics.GENERATED_TOKENS.labels("plain").inc(generated)
    response = CompletionResponse(
        id=request_id, model=req.model, choices=choices,
        usage=usage_info(sum(len(p) for p in prompts), generated, cached),
    )
    return JSONResponse(response.model_dump(exclude_none=True))


async def stream_completion(state: ServerState, req, request_id, prompts, echoes, outputs):
    created = int(time.time())
    generated = cached = 0
    offsets: dict[int, int] = {}
    echoed: set[int] = set()

    def chunk(choices, usage=None) -> str:
        return sse(CompletionChunk(id=request_id, created=created, model=req.model, choices=choices, usage=usage))

    try:
        async for prompt_index, output in outputs:
            cached += output.num_cached_tokens or 0 if output.finished else 0
            for o in output.outputs:
                index = prompt_index * req.n + o.index
                generated += len(o.token_ids)
                text = o.text
                if index not in echoed:
                    echoed.add(index)
                    text = echoes[prompt_index] + text
                logprobs = None
                if req.logprobs is not None:
                    logprobs = completion_logprobs(state, o.token_ids, o.logprobs, req.logprobs, offsets.get(index, 0))
                offsets[index] = offsets.get(index, 0) + len(o.text)
                yield chunk([CompletionChoice(
                    index=index, text=text, logprobs=logprobs, finish_reason=o.finish_reason, stop_reason=o.stop_reason,
                )])
    finally:
        await outputs.aclose()
        metrics.GENERATED_TOKENS.labels("plain").inc(generated)
    if req.stream_options and req.stream_options.include_usage:
        yield chunk([], usage_info(sum(len(p) for p in prompts), generated, cached))
    yield "data: [DONE]\n\n"
