"""Engine calls as OpenTelemetry spans under the search's span, itself under the client's
(`traceparent`), on the real OpenTelemetry SDK with an in-memory exporter."""

import asyncio

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from vllm import SamplingParams

from search.types import SamplingSpec
from server.engine import RequestGenerator
from server.tracing import search_span, tracer_for
from tests.unit.scripted import sample

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = {"traceparent": f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"}


class Engine:
    async def generate(self, prompt_ids, spec, request, request_id, should_stop=None):
        await asyncio.sleep(0)
        return [sample("The answer is 5.") for _ in range(spec.n)]


@pytest.fixture
def traced():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("deliberate"), exporter


@pytest.mark.asyncio
async def test_each_engine_call_is_a_span_under_the_search_under_the_clients(traced):
    tracer, exporter = traced
    generator = RequestGenerator(Engine(), SamplingParams(), "chatcmpl-1", tracer)
    with search_span(tracer, TRACEPARENT, {"deliberate.strategy": "mcts"}):
        # concurrent calls, as a search issues them, each in a task of its own
        await asyncio.gather(generator.generate([1, 2, 3], SamplingSpec(n=2)),
                             asyncio.ensure_future(generator.generate([1, 2, 3, 4], SamplingSpec(n=1))))
    spans = {span.name: span for span in exporter.get_finished_spans() if span.name == "deliberate.search"}
    search = spans["deliberate.search"]
    calls = [span for span in exporter.get_finished_spans() if span.name == "deliberate.engine_call"]
    assert f"{search.context.trace_id:032x}" == CLIENT_TRACE and search.attributes["deliberate.strategy"] == "mcts"
    assert len(calls) == 2 and all(call.parent.span_id == search.context.span_id for call in calls)
    assert sorted(call.attributes["deliberate.request_id"] for call in calls) == ["chatcmpl-1-0", "chatcmpl-1-1"]
    by_prompt = {call.attributes["deliberate.prompt_tokens"]: call.attributes for call in calls}
    assert (by_prompt[3]["deliberate.n"], by_prompt[3]["deliberate.generated_tokens"]) == (2, 32)
    assert (by_prompt[4]["deliberate.n"], by_prompt[4]["deliberate.generated_tokens"]) == (1, 16)


@pytest.mark.asyncio
async def test_without_a_tracer_nothing_is_traced(traced):
    _, exporter = traced
    generator = RequestGenerator(Engine(), SamplingParams(), "chatcmpl-2")
    with search_span(None, TRACEPARENT, {}):
        assert len(await generator.generate([1], SamplingSpec(n=1))) == 1
    assert exporter.get_finished_spans() == ()


def test_only_an_engine_with_an_otlp_endpoint_gets_a_tracer():
    from types import SimpleNamespace

    def engine(endpoint):
        return SimpleNamespace(vllm_config=SimpleNamespace(observability_config=SimpleNamespace(
            otlp_traces_endpoint=endpoint)))

    assert tracer_for(engine(None)) is None and tracer_for(SimpleNamespace()) is None
    assert tracer_for(engine("http://127.0.0.1:4317")) is not None
