"""GET /health and GET /metrics: for load balancers and Prometheus."""

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server import metrics
from server.errors import APIError
from server.protocol import ErrorResponse, HealthResponse
from server.serving import state_of

router = APIRouter()


@router.get("/health", response_model=HealthResponse, responses={503: {"model": ErrorResponse}})
async def health(request: Request) -> HealthResponse:
    try:
        await state_of(request).generator.engine.check_health()
    except Exception as exc:
        raise APIError(f"The engine is not healthy: {exc}", 503) from exc
    return HealthResponse()


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def prometheus_metrics() -> Response:
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
