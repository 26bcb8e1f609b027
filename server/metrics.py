"""Our Prometheus series. They live in prometheus_client's default registry beside the
engine's own `vllm:*` series, so `/metrics` serves both from one registry."""

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, generate_latest

REQUESTS = Counter(
    "deliberate_requests", "HTTP API requests by endpoint and status code.", ["endpoint", "status"]
)
REQUEST_LATENCY = Histogram(
    "deliberate_request_latency_seconds", "Time from request to last byte, by endpoint.", ["endpoint"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
GENERATED_TOKENS = Counter(
    "deliberate_generated_tokens", "Tokens generated, by kind (plain request or search).", ["kind"]
)
SEARCHES = Counter("deliberate_searches", "Searches by strategy and outcome.", ["strategy", "outcome"])
SEARCH_LATENCY = Histogram(
    "deliberate_search_latency_seconds", "Wall time of a whole search, by strategy.", ["strategy"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
ENGINE_CALLS = Counter("deliberate_engine_calls", "Engine requests issued by searches, by strategy.", ["strategy"])
SEARCHES_IN_FLIGHT = Gauge("deliberate_searches_in_flight", "Searches running now.")


def render() -> bytes:
    return generate_latest(REGISTRY)
