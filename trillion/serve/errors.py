"""Errors a request can get, and their OpenAI-style bodies:

    {"error": {"message": "...", "type": "invalid_request_error", "param": "temperature", "code": null}}

`RequestError` (400) and `QueueFull` (429) are raised by the Python API (`trillion.serve.service`)
too; the HTTP layer only turns them into responses.
"""

from __future__ import annotations

import json


class APIError(Exception):
    status = 500
    type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 status: int | None = None, headers: dict | None = None):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code
        self.headers = headers or {}
        if status is not None:
            self.status = status

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


class RequestError(APIError, ValueError):
    """The request is wrong; `param` names the field."""

    status = 400
    type = "invalid_request_error"


class AuthError(APIError):
    status = 401
    type = "authentication_error"


class NotFound(APIError):
    status = 404
    type = "not_found_error"


class TooLarge(APIError):
    status = 413
    type = "invalid_request_error"


class QueueFull(APIError):
    """Every queue place is taken; the client should retry after `retry_after` seconds."""

    status = 429
    type = "rate_limit_error"

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message, code="queue_full", headers={"Retry-After": str(retry_after)})


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def sse_error(e: APIError) -> str:
    """An error in the middle of a stream: one event with the error body (the status is already sent)."""
    return f"data: {json.dumps(e.body())}\n\n"


def validation_error(errors: list[dict]) -> RequestError:
    """A pydantic / FastAPI validation failure -> one RequestError naming the first bad field."""
    first = errors[0]
    loc = [p for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return RequestError(f"the request body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}",
                            code="invalid_json")
    # union members add their type name to the location ("messages.0.user.content"): keep the fields
    param, prev = "", None
    for p in loc:
        if isinstance(p, int):
            param += f"[{p}]"
        elif str(p) in _TYPE_TAGS or "[" in str(p) or (isinstance(prev, int) and p in _ROLE_TAGS):
            pass
        else:
            param += ("." if param else "") + str(p)
        prev = p
    kind = first.get("type")
    if kind == "missing":
        msg = f"missing required field: {param}"
    elif kind == "extra_forbidden":
        msg = f"unrecognized request argument supplied: {param}"
    else:
        msg = f"{param or 'body'}: {first['msg'].removeprefix('Value error, ')}"
        if "input" in first and kind not in ("missing",):
            msg += f" (got {_short(first['input'])})"
    more = len(errors) - 1
    if more:
        msg += f"; and {more} more error{'s' if more > 1 else ''}"
    return RequestError(msg, param=param or None, code=kind)


_ROLE_TAGS = {"system", "developer", "user", "assistant", "tool"}  # the tag of a message union member
_TYPE_TAGS = {"str", "int", "float", "bool", "none", "dict", "list"}  # the member of a plain union


def _short(value) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
