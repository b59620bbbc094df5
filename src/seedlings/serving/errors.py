"""Every error the service returns has one shape: ``{"error": {"code", "message"}}``; on the Open
Inference Protocol routes (``/v2``) the protocol's own ``{"error": "<message>"}``.

Clients switch on ``code`` (stable, machine-readable) and show ``message`` (for people:
what was wrong and what to do). On ``/v2`` the code travels in the ``Seedlings-Error-Code`` header,
because v2 clients (tritonclient) read nothing but the ``error`` string. Handlers here turn FastAPI's,
Starlette's and our own exceptions into that shape, so no route can leak a framework-specific body or
a traceback.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from seedlings.errors import ImageError

log = logging.getLogger("seedlings.serving")

HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 406: "not_acceptable", 408: "request_timeout",
              413: "body_too_large", 415: "unsupported_media_type", 422: "invalid_request",
              429: "too_many_requests", 503: "unavailable"}
CODE_HEADER = "Seedlings-Error-Code"
CLIENT_CLOSED = 499  # nginx's convention: the client went away before the answer; never sent


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class V2ErrorBody(BaseModel):
    """The Open Inference Protocol's error: one string (the code is in the Seedlings-Error-Code header)."""

    error: str


def error_responses(*statuses: int) -> dict:
    """OpenAPI ``responses`` entries for the given error statuses (clients and schemathesis read them)."""
    return {s: {"model": ErrorBody, "description": HTTP_CODES.get(s, "error")} for s in statuses}


def v2_error_responses(*statuses: int) -> dict:
    return {s: {"model": V2ErrorBody, "description": HTTP_CODES.get(s, "error")} for s in statuses}


class ApiError(Exception):
    """An error with its HTTP status, raised anywhere in a route."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


class Overloaded(Exception):
    """A limit of the whole process was reached (queue, decoding or body budget); retry after ``retry_after`` s."""

    def __init__(self, retry_after: int, reason: str = "overloaded", message: str | None = None):
        super().__init__(message or f"the server is busy ({retry_after}s estimated wait)")
        self.retry_after = retry_after
        self.reason = reason  # the metrics label: which limit was reached


class InferenceTimeout(Exception):
    """The images were not classified within the request timeout."""


class BodyTooLarge(Exception):
    """Raised while reading a request body that passed the size limit."""

    def __init__(self, limit: int):
        super().__init__(f"the request body is over the limit of {limit:,} bytes")
        self.limit = limit


class UploadTimeout(Exception):
    """The request body did not arrive within the upload timeout (or the server began to shut down)."""

    def __init__(self, seconds: float, draining: bool = False):
        message = ("the server is shutting down and the request body had not arrived; retry" if draining
                   else f"the request body did not arrive within {seconds:g}s")
        super().__init__(message)
        self.seconds = seconds


def is_v2(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


def error_response(status: int, code: str, message: str, headers: dict | None = None,
                   v2: bool = False) -> JSONResponse:
    if v2:
        return JSONResponse({"error": message}, status_code=status, headers={**(headers or {}), CODE_HEADER: code})
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def scoped_error(scope, status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    """The error in the shape of the route the request was for (v1 or v2)."""
    return error_response(status, code, message, headers, is_v2(scope.get("path", "")))


def body_too_large_message(limit: int) -> str:
    return (f"the request body is over the limit of {_size(limit)}; send a smaller photo "
            "(seedling photos work well at 1,000 px or less) or fewer files per request")


def _size(n: int) -> str:
    """Bytes as people read them: 10 MiB for 10 × 1024², not '10.5 MB'."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request is not valid"


def _reply(request: Request, status: int, code: str, message: str, headers: dict | None = None):
    return scoped_error(request.scope, status, code, message, headers)


async def _api_error(request: Request, exc: ApiError):
    return _reply(request, exc.status, exc.code, exc.message, exc.headers)


async def _image_error(request: Request, exc: ImageError):
    request.app.state.metrics.rejected.labels(exc.code).inc(getattr(exc, "images", 1))  # each bad image
    where = f"{exc.path}: " if exc.path else ""
    return _reply(request, 422, exc.code, f"{where}{exc.reason}")


async def _too_large(request: Request, exc: BodyTooLarge):
    request.app.state.metrics.rejected.labels("body_too_large").inc()
    # The rest of the body is never read: the connection must close, or the server would go on reading it.
    return _reply(request, 413, "body_too_large", body_too_large_message(exc.limit), {"Connection": "close"})


async def _upload_timeout(request: Request, exc: UploadTimeout):
    return _reply(request, 408, "request_timeout", f"{exc}; check the connection, or send a smaller photo",
                  {"Connection": "close"})


async def _overloaded(request: Request, exc: Overloaded):
    request.app.state.metrics.rejected.labels(exc.reason).inc()
    return _reply(request, 503, "overloaded", f"{exc}; retry after {exc.retry_after}s",
                  {"Retry-After": str(exc.retry_after)})


async def _timeout(request: Request, exc: InferenceTimeout):
    return _reply(request, 503, "timeout", f"{exc}; the server is overloaded, retry later", {"Retry-After": "5"})


async def _validation(request: Request, exc: RequestValidationError):
    return _reply(request, 422, "invalid_request", _validation_message(exc))


async def _http_error(request: Request, exc: StarletteHTTPException):
    code = HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404:
        message = f"{request.url.path}: no such endpoint or model (see /docs)"
    return _reply(request, exc.status_code, code, message, getattr(exc, "headers", None))


async def _client_disconnect(request: Request, exc: ClientDisconnect):
    """The client went away mid-request: not a server error. Counted as 499, logged without a traceback."""
    log.info("client disconnected during %s %s", request.method, request.url.path)
    request.app.state.metrics.rejected.labels("client_disconnect").inc()
    return _reply(request, CLIENT_CLOSED, "client_closed_request", "the client closed the connection")


async def _unexpected(request: Request, exc: Exception):
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _reply(request, 500, "internal", "the server failed on this request; it has been logged")


HANDLERS = {ApiError: _api_error, ImageError: _image_error, BodyTooLarge: _too_large,
            UploadTimeout: _upload_timeout, Overloaded: _overloaded, InferenceTimeout: _timeout,
            RequestValidationError: _validation, StarletteHTTPException: _http_error,
            ClientDisconnect: _client_disconnect, Exception: _unexpected}


def install_error_handlers(app: FastAPI) -> None:
    for cls, handler in HANDLERS.items():
        app.add_exception_handler(cls, handler)


def handler_for(exc: Exception):
    """The handler of ``exc`` in HANDLERS, most specific class first, as Starlette picks it for routed requests;
    None for an unexpected error (bare ``Exception``: re-raise it, and Starlette's ServerErrorMiddleware answers
    500 through ``_unexpected``). The fast path of /v1/predict dispatches with this."""
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in HANDLERS:
            return HANDLERS[cls]
    return None
