"""Bodies over --max-request-bytes are a 413 before the app reads them; JSON with a lone surrogate is a
400 naming where; others pass unchanged."""

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from server.limits import RequestBodyGuard, lone_surrogate_path


async def echo_length(request):
    return JSONResponse({"received": len(await request.body())})


APP = RequestBodyGuard(Starlette(routes=[Route("/", echo_length, methods=["POST"])]), max_bytes=1000)


async def post(content) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=APP), base_url="http://test") as client:
        return await client.post("/", content=content)


async def chunks(total: int, size: int = 300):
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


async def test_a_declared_length_over_the_limit_is_refused_unread():
    response = await post(b"x" * 1001)
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == 413 and "--max-request-bytes" in error["message"]


async def test_a_body_at_the_limit_passes_whole():
    assert (await post(b"x" * 1000)).json() == {"received": 1000}


async def test_a_chunked_body_is_counted_as_it_arrives():
    assert (await post(chunks(900))).json() == {"received": 900}
    assert (await post(chunks(1200))).status_code == 413


async def test_a_lone_surrogate_is_a_400_naming_where_it_is():
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi \\ud800"}]}'
    response = await post(body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages[0].content"


def test_only_lone_surrogates_are_refused():
    assert lone_surrogate_path(b'{"stop": ["\\udc00"]}') == "stop[0]"
    assert lone_surrogate_path(b'{"search": {"step_delimiter": "\\ud83d"}}') == "search.step_delimiter"
    assert lone_surrogate_path(b'{"a": "\\ud83d\\ude00 a paired emoji"}') is None
    assert lone_surrogate_path(b'{"a": "\\\\ud800 an escaped backslash, then text"}') is None
    assert lone_surrogate_path(b'{"\\ud800": 1}') == "'\\ud800'"
    assert lone_surrogate_path(b"not json \\ud800") is None


async def test_structured_outputs_that_is_not_an_object_is_a_400_naming_it():
    response = await post(b'{"messages": [], "structured_outputs": "*x"}')
    assert response.status_code == 400 and response.json()["error"]["param"] == "structured_outputs"
    assert (await post(b'{"structured_outputs": {"regex": "a+"}}')).status_code == 200
    assert (await post(b'{"structured_outputs": null}')).status_code == 200
