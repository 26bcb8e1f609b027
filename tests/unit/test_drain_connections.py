"""Once the server is shutting down, every response closes its connection, so no client is left
with an idle keep-alive connection for the HTTP server to close under its next request."""

from types import SimpleNamespace

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route

from server.admission import Admission, AdmissionLimits
from server.routes import CloseConnectionsWhileDraining


async def answer(request):
    return JSONResponse({"ok": True}, headers={"Connection": "keep-alive"})


def app_with_admission() -> tuple[Starlette, Admission]:
    app = Starlette(routes=[Route("/", answer, methods=["GET", "POST"])],
                    middleware=[Middleware(CloseConnectionsWhileDraining)])
    admission = Admission(AdmissionLimits(capacity=4, max_running=1, max_queued=1))
    app.state.deliberate = SimpleNamespace(admission=admission)
    return app, admission


async def post(app) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.post("/")


async def test_responses_keep_their_connection_until_the_drain_starts():
    app, _ = app_with_admission()
    response = await post(app)
    assert response.headers["connection"] == "keep-alive"


async def test_every_response_closes_its_connection_while_draining():
    app, admission = app_with_admission()
    admission.close()
    response = await post(app)
    assert response.json() == {"ok": True}
    assert response.headers.get_list("connection") == ["close"]


async def test_an_app_without_deliberate_state_is_left_alone():
    app = Starlette(routes=[Route("/", answer)], middleware=[Middleware(CloseConnectionsWhileDraining)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        assert (await client.get("/")).headers["connection"] == "keep-alive"
