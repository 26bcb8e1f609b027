"""Request bodies the server refuses before any route reads them, for every route (vLLM's too):

- over `--max-request-bytes`: 413, so a huge body never reaches JSON parsing or the tokenizer
  on the event loop;
- JSON holding a lone UTF-16 surrogate (`"\\ud800"`): 400 naming where it is. Python decodes
  it into a string no tokenizer can encode, which fails deep in the engine as a 500;
- `structured_outputs` that is not an object: 400 (vLLM 0.32's request model calls `.get` on it
  while validating, a 500).
"""

from __future__ import annotations

import json
import re

from search.types import QUOTE_LIMIT

DEFAULT_MAX_REQUEST_BYTES = 10 * 1024 * 1024
# Any \\uD800-\\uDFFF escape; only bodies with one are parsed to see whether it is paired.
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
STRUCTURED_OUTPUTS = b'"structured_outputs"'


class RequestBodyGuard:
    """ASGI middleware: a declared Content-Length over the limit is refused unread; otherwise
    the body is read (counted as it arrives, refused when it passes the limit), checked, and
    handed to the app whole."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self.refuse(send, 413, "RequestEntityTooLarge", None, self.too_large())
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, replay([message], receive), send)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self.refuse(send, 413, "RequestEntityTooLarge", None, self.too_large())
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        where = lone_surrogate_path(body)
        if where is not None:
            return await self.refuse(send, 400, "BadRequestError", where, (
                f"{where} holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape), which is not "
                "text any tokenizer can encode; send valid Unicode (pair it, or drop it)."))
        if not structured_outputs_is_an_object(body):
            return await self.refuse(send, 400, "BadRequestError", "structured_outputs", (
                "structured_outputs must be an object such as {\"json\": SCHEMA}, {\"regex\": ...} or "
                "{\"choice\": [...]}, or null."))
        return await self.app(scope, replay([{"type": "http.request", "body": body, "more_body": False}], receive),
                              send)

    def too_large(self) -> str:
        return (f"The request body is over {self.max_bytes} bytes, the most this server accepts "
                "(--max-request-bytes). Send a shorter prompt, or split the work into several requests.")

    async def refuse(self, send, status: int, kind: str, param: str | None, message: str) -> None:
        body = json.dumps({"error": {"message": message, "type": kind, "param": param, "code": status}}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 413:  # the rest of the body was never read
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def structured_outputs_is_an_object(body: bytes) -> bool:
    """False when a JSON object body has a `structured_outputs` that is neither null nor an object."""
    if STRUCTURED_OUTPUTS not in body:
        return True
    try:
        document = json.loads(body)
    except ValueError:
        return True  # not JSON: the route answers that
    value = document.get("structured_outputs") if isinstance(document, dict) else None
    return value is None or isinstance(value, dict)


def lone_surrogate_path(body: bytes) -> str | None:
    """Where a JSON body holds a string with a lone surrogate ("messages[0].content"), or None."""
    if not SURROGATE_ESCAPE.search(body):
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None  # not JSON: the route answers that
    stack = [("", document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str) and not is_encodable(value):
            return (path or "body")[:QUOTE_LIMIT]
        if isinstance(value, dict):
            for key, item in value.items():
                key_path = f"{path}.{key}" if path else key
                if not is_encodable(key):  # the key itself: quoted as ascii() shows it
                    return (f"{path}.{ascii(key)}" if path else ascii(key))[:QUOTE_LIMIT]
                stack.append((key_path, item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{index}]", item) for index, item in enumerate(value))
    return None


def is_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def replay(messages: list[dict], then):
    pending = list(messages)

    async def receive():
        if pending:
            return pending.pop(0)
        return await then()

    return receive
