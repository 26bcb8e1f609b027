"""OpenTelemetry spans of a search, only where vLLM traces: the `opentelemetry` packages are
installed and the server runs with vLLM's --otlp-traces-endpoint, whose tracer provider (set up
by vLLM's engine client in this process) exports them.

A search is a `deliberate.search` span under the client request's span (its `traceparent`
header, as vLLM reads it), and each engine call a `deliberate.engine_call` span under it: the
search's tasks inherit the current span as they inherit every context variable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any


def tracer_for(engine_client) -> Any | None:
    """deliberate's tracer when vLLM exports traces from this process, else None."""
    from vllm.tracing import is_tracing_available

    config = getattr(getattr(engine_client, "vllm_config", None), "observability_config", None)
    if config is None or config.otlp_traces_endpoint is None or not is_tracing_available():
        return None
    from opentelemetry import trace

    return trace.get_tracer("deliberate")


@contextlib.contextmanager
def search_span(tracer, trace_headers: Mapping[str, str] | None, attributes: dict[str, Any]) -> Iterator[None]:
    """The search's span, as the current span, under the client's (when it sent one)."""
    if tracer is None:
        yield
        return
    from vllm.tracing import extract_trace_context

    with tracer.start_as_current_span("deliberate.search", context=extract_trace_context(trace_headers),
                                      attributes=attributes):
        yield


@contextlib.contextmanager
def engine_call_span(tracer, attributes: dict[str, Any]) -> Iterator[Any]:
    """A span for one engine call under the current one; None to set attributes on when not tracing."""
    if tracer is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    with tracer.start_as_current_span("deliberate.engine_call", kind=SpanKind.CLIENT, attributes=attributes) as span:
        yield span
