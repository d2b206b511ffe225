"""Pure ASGI middleware in front of every route: the API key, the body size limit, JSON bodies
whatever their content type, request counts."""

from __future__ import annotations

import hmac
import json

from .errors import APIError, AuthError, TooLarge

ENDPOINTS = ("/health", "/metrics", "/version", "/v1/models", "/v1/completions", "/v1/chat/completions",
             "/tokenize", "/detokenize")
MODEL_PATH = "/v1/models/"  # + an id: counted as one endpoint
JSON = b"application/json"


class Gate:
    """Pure ASGI middleware in front of every route: API key, body size limit, request counts.

    The body is read here (up to the limit) and replayed to the app, so an oversized or endless
    body is refused before anything parses it. Every body is read as JSON: one sent without a
    content type, or with curl's default `-d` type (form-urlencoded), is not refused for it."""

    def __init__(self, app, *, api_key: str | None, max_body_bytes: int, metrics):
        self.app, self.api_key, self.max_body, self.metrics = app, api_key, max_body_bytes, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        status = [500]

        async def send_counted(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            if self.api_key and path != "/health" and not self._authorized(scope):
                return await _reply(send_counted, AuthError(
                    "missing or wrong API key: send 'Authorization: Bearer <key>'", code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"}))
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body = await self._read_body(scope, receive)
                if body is None:
                    return await _reply(send_counted, TooLarge(
                        f"the request body is larger than {self.max_body} bytes", code="request_too_large"))
                receive = _replay(body, receive)
                scope = _as_json(scope)
            await self.app(scope, receive, send_counted)
        finally:
            self.metrics.requests.labels(_endpoint(path), str(status[0])).inc()

    def _authorized(self, scope) -> bool:
        for k, v in scope["headers"]:
            if k == b"authorization":
                scheme, _, token = v.decode("latin-1").partition(" ")
                return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode())
        return False

    async def _read_body(self, scope, receive) -> bytes | None:
        for k, v in scope["headers"]:
            if k == b"content-length" and v.isdigit() and int(v) > self.max_body:
                return None
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                break
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not msg.get("more_body"):
                break
        return b"".join(chunks)


def _endpoint(path: str) -> str:
    if path in ENDPOINTS:
        return path
    return MODEL_PATH + "{id}" if path.startswith(MODEL_PATH) else "other"


def _as_json(scope):
    """The request with content-type application/json unless it says JSON already."""
    headers = scope["headers"]
    if any(k == b"content-type" and b"json" in v.lower() for k, v in headers):
        return scope
    return dict(scope, headers=[(k, v) for k, v in headers if k != b"content-type"] + [(b"content-type", JSON)])


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _reply(send, e: APIError) -> None:
    data = json.dumps(e.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in e.headers.items()]
    await send({"type": "http.response.start", "status": e.status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
