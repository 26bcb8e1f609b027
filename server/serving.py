"""What the chat and completions endpoints share: the server state, sampling parameters from
a request, context-length checks, logprob formatting and cancellation on disconnect."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from vllm import SamplingParams
from vllm.sampling_params import RequestOutputKind

from server.engine import VLLMGenerator
from server.tree_store import TreeStore
from server.errors import APIError
from server.protocol import ModelCard, SamplingFields, TopLogprob, UsageInfo, PromptTokensDetails

# vLLM clamps -inf logprobs to this so the JSON stays valid.
MIN_LOGPROB = -9999.0


@dataclass
class ServedModel:
    """A name clients may ask for: the model itself, or an alias that applies a search."""

    name: str
    search: dict[str, Any] | None = None


@dataclass
class ServerState:
    generator: VLLMGenerator
    models: dict[str, ServedModel]
    root_name: str
    tree_store: TreeStore
    default_sampling: dict[str, Any] = field(default_factory=dict)
    critic_generator: VLLMGenerator | None = None  # --critic-model: the critic strategy's judge

    def resolve(self, name: str) -> ServedModel:
        model = self.models.get(name)
        if model is None:
            raise APIError(
                f"The model `{name}` does not exist. Known models: {', '.join(self.models)}.", 404, "model"
            )
        return model

    def model_cards(self) -> list[ModelCard]:
        return [
            ModelCard(id=m.name, root=self.root_name, max_model_len=self.generator.max_model_len, search=m.search)
            for m in self.models.values()
        ]


def state_of(request: Request) -> ServerState:
    return request.app.state.deliberate


def check_context(prompt_len: int, requested: int | None, max_model_len: int, prompt_param: str) -> int:
    """The number of new tokens to allow, or a 400 when the request cannot fit the context."""
    if prompt_len >= max_model_len:
        raise APIError(
            f"The prompt is {prompt_len} tokens, but this model's maximum context length is "
            f"{max_model_len} tokens. Shorten the {prompt_param}.", 400, prompt_param)
    if requested is None:
        return max_model_len - prompt_len
    if prompt_len + requested > max_model_len:
        raise APIError(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{prompt_len + requested} tokens ({prompt_len} in the {prompt_param}, {requested} in the "
            f"completion). Reduce the length of the {prompt_param} or of max_tokens.", 400, "max_tokens")
    return requested


def sampling_params(
    state: ServerState, req: SamplingFields, max_tokens: int, logprobs: int | None, stream: bool
) -> SamplingParams:
    values: dict[str, Any] = dict(state.default_sampling)
    for name in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty"):
        if getattr(req, name) is not None:
            values[name] = getattr(req, name)
    values.update(
        n=req.n, max_tokens=max_tokens, stop=req.stop_list() or None, seed=req.seed,
        presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty,
        ignore_eos=req.ignore_eos, logprobs=logprobs,
        output_kind=RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY,
    )
    if logprobs is not None and logprobs > state.generator.max_logprobs >= 0:
        raise APIError(f"At most {state.generator.max_logprobs} logprobs per token can be returned.", 400, "top_logprobs")
    try:
        return SamplingParams(**values)
    except (ValueError, TypeError) as exc:
        raise APIError(f"Invalid sampling parameters: {exc}", 400) from exc


def usage_info(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> UsageInfo:
    return UsageInfo(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached_tokens),
    )


def clamp(logprob: float) -> float:
    return MIN_LOGPROB if math.isinf(logprob) or math.isnan(logprob) else max(logprob, MIN_LOGPROB)


def token_string(generator: VLLMGenerator, token_id: int, logprob) -> str:
    text = getattr(logprob, "decoded_token", None)
    return text if text is not None else generator.token_text(token_id)


def top_logprobs(generator: VLLMGenerator, position: dict, k: int) -> list[TopLogprob]:
    ranked = sorted(position.items(), key=lambda item: item[1].rank or 0)[:k]
    return [
        TopLogprob(token=(tok := token_string(generator, tid, lp)), logprob=clamp(lp.logprob),
                   bytes=list(tok.encode("utf-8", errors="replace")))
        for tid, lp in ranked
    ]


def sse(payload: Any) -> str:
    body = payload.model_dump_json(exclude_none=True) if hasattr(payload, "model_dump_json") else json.dumps(payload)
    return f"data: {body}\n\n"


async def merge(streams: list[AsyncIterator]) -> AsyncIterator[tuple[int, Any]]:
    """Items of several async iterators as they come, tagged with the iterator's index.
    Closing the merged iterator closes (and so aborts) every source."""
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(index: int, stream: AsyncIterator) -> None:
        try:
            async for item in stream:
                await queue.put((index, item))
            await queue.put((index, done))
        except BaseException as exc:  # delivered to the consumer, which re-raises it
            await queue.put((index, exc))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    remaining = len(tasks)
    try:
        while remaining:
            index, item = await queue.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def cancel_on_disconnect(request: Request, work: Awaitable[Response]) -> Response:
    """Run a non-streaming handler, cancelling it (and its engine requests) if the client leaves."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return Response(status_code=499)


class EventStream(StreamingResponse):
    """Server-sent events that stop as soon as the client leaves, not at the next write.

    Starlette only watches for a disconnect under ASGI spec < 2.4 (uvicorn speaks 2.4 and
    relies on a failed write); a search may not write for a long while, so ask for the watch.
    Stopping closes the body generator, which cancels the search and aborts its engine requests.
    """

    media_type = "text/event-stream"

    async def __call__(self, scope, receive, send):
        scope = {**scope, "asgi": {**scope.get("asgi", {}), "spec_version": "2.3"}}
        await super().__call__(scope, receive, send)
