"""The FastAPI application: routers, error handlers, request metrics, and the OpenAPI contract."""

from __future__ import annotations

import contextlib
import time

from fastapi import FastAPI

from server import metrics
from server.errors import install_error_handlers
from server.routers import chat, completions, models, ops, trees
from server.serving import ServerState

ENDPOINTS = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics", "/v1/search/trees"}


def build_app(state: ServerState | None = None) -> FastAPI:
    """The app; `state` (engine and models) is attached by the CLI once the engine runs."""
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        # Here, not after uvicorn returns: on SIGTERM uvicorn re-raises the signal once it has
        # shut down, and the engine's processes would outlive us.
        if app.state.deliberate is not None:
            await app.state.deliberate.tree_store.close()
            app.state.deliberate.generator.shutdown()

    app = FastAPI(
        lifespan=lifespan,
        title="deliberate",
        version="0.1.0",
        description="An OpenAI-compatible server that embeds vLLM and, per request, spends extra "
        "inference compute on a search (the `search` extension).",
    )
    app.state.deliberate = state
    install_error_handlers(app)
    for module in (chat, completions, models, ops, trees):
        app.include_router(module.router)

    app.add_middleware(RequestMetrics)
    app.openapi = lambda: contract(app)
    return app


class RequestMetrics:
    """Counts requests and times them to the last byte (plain ASGI: streams pass untouched)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.monotonic(), 500

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            path = scope["path"].rsplit("/", 1)[0] if scope["path"].startswith("/v1/search/trees/") else scope["path"]
            path = path if path in ENDPOINTS else "other"
            metrics.REQUESTS.labels(path, str(status)).inc()
            metrics.REQUEST_LATENCY.labels(path).observe(time.monotonic() - started)


def contract(app: FastAPI) -> dict:
    """FastAPI's schema, with 422 replaced by the 400 that bad input really gets here."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None:
                responses.setdefault("400", {
                    "description": "Bad Request",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
                })
    for name in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)
    app.openapi_schema = schema
    return schema
