"""Request dependencies shared by the routers: the ready predictor, the bearer token, body limits."""

from __future__ import annotations

import asyncio
import hmac

from fastapi import Request

from seedlings.serving.errors import (
    ApiError,
    BodyTooLarge,
    Overloaded,
    UploadTimeout,
    body_too_large_message,
    scoped_error,
)
from seedlings.serving.limits import Budget
from seedlings.serving.predictor import Predictor
from seedlings.serving.protocol import DRAINING  # set by the HTTP protocol when shutdown begins mid-upload

# Dependencies are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in its thread
# pool: two thread hops per request (GIL hand-overs, wake-ups) for a few attribute reads.


def ready_or_none(app) -> Predictor | None:
    """The predictor once its model is loaded and warmed; None before that and once shutdown begins.
    The one readiness check: /readyz, /v2/health/ready and every route that needs the model use it."""
    predictor = getattr(app.state, "predictor", None)
    return predictor if predictor is not None and predictor.ready else None


async def ready_predictor(request: Request) -> Predictor:
    """The predictor, or 503 while the model is still loading (or the server is shutting down)."""
    predictor = ready_or_none(request.app)
    if predictor is None:
        raise ApiError(503, "not_ready", "the model is still loading; retry in a few seconds",
                       {"Retry-After": "1"})
    return predictor


def decoder_for(app, predictor: Predictor):
    """The decoder that makes ``predictor``'s inputs: the app's, or, while ``serve --model REGISTRY`` replaces a model
    (serving/follow.py), the replaced model's own for the requests that began on it (its image size may differ)."""
    decoders = getattr(app.state, "decoders", None)
    return decoders.get(predictor, app.state.decoder) if decoders else app.state.decoder


async def check_token(request: Request) -> None:
    """When ``SEEDLINGS_API_TOKEN`` is set, prediction endpoints need ``Authorization: Bearer <token>``."""
    token = request.app.state.settings.token
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, "unauthorized", "this server needs 'Authorization: Bearer <token>' "
                       "(the token is in SEEDLINGS_API_TOKEN on the server)", {"WWW-Authenticate": "Bearer"})


class BodyLimitMiddleware:
    """Refuse bodies over ``limit`` bytes: at once from Content-Length, else while streaming; and
    bodies that take more than ``timeout`` seconds to arrive (408), or that are still arriving when the
    server begins to shut down (408 at once, instead of holding the shutdown for the upload timeout).

    Checking as bytes arrive (not after buffering) means a chunked upload of any size costs
    at most ``limit`` bytes of memory before it gets its 413, and a client that stalls mid-upload
    holds its connection for at most ``timeout`` seconds.

    All bodies together are bounded too (``in_flight``, a :class:`Budget` of bytes): when a route first
    reads its body, the declared Content-Length (or, chunked, each chunk as it comes) is taken from the
    budget and given back when the request ends. Over it, 503 + Retry-After before the body is read:
    40 clients each sending 10 MiB no longer hold 40 × 10 MiB (issue #21).
    """

    def __init__(self, app, limit: int, metrics, timeout: float | None = None, in_flight: Budget | None = None):
        self.app = app
        self.limit = limit
        self.metrics = metrics
        self.timeout = timeout
        self.in_flight = in_flight

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            self.metrics.rejected.labels("body_too_large").inc()
            await scoped_error(scope, 413, "body_too_large", body_too_large_message(self.limit),
                               {"Connection": "close"})(scope, receive, send)
            return
        has_body = declared not in (None, b"0") or b"transfer-encoding" in headers
        guard = _BodyGuard(self, scope, receive, send, has_body,
                           int(declared) if declared is not None and declared.isdigit() else None)
        try:
            await self.app(scope, guard.receive, guard.send)
        finally:
            if self.in_flight is not None and guard.held:
                self.in_flight.give(guard.held)


class _BodyGuard:
    """One request's body: its size, its deadline, and whether it has all been read."""

    def __init__(self, limits: BodyLimitMiddleware, scope, receive, send, has_body: bool, declared: int | None):
        self.limits, self.scope, self._receive, self._send = limits, scope, receive, send
        self.received = 0
        self.declared = declared
        self.held = 0  # bytes taken from the in-flight budget, given back when the request ends
        self.complete = not has_body
        self.loop = asyncio.get_running_loop()
        # Only the body is timed: once it is complete, later receives (waiting for a disconnect while
        # a file streams out) are passed through untouched.
        self.deadline = None if limits.timeout is None else self.loop.time() + limits.timeout

    async def receive(self):
        if not self.complete and self.declared and not self.held:
            self._hold(self.declared)  # before reading a byte of it
        if self.deadline is None or self.complete:
            message = await self._receive()
        else:
            try:
                message = await _receive_by(self._receive, self.deadline, self.loop)
            except asyncio.TimeoutError:
                self.limits.metrics.rejected.labels("upload_timeout").inc()
                raise UploadTimeout(self.limits.timeout) from None
        if message["type"] == "http.request":
            self._count(message)
        return message

    def _hold(self, n: int) -> None:
        budget = self.limits.in_flight
        if budget is None or n <= 0:
            return
        if not budget.take(n):  # counted in images_rejected_total{reason="body_budget"} by the 503's handler
            raise Overloaded(1, "body_budget", f"the server is receiving other uploads ({budget.in_use:,} bytes "
                                               "in flight)")
        self.held += n

    def _count(self, message) -> None:
        size = len(message.get("body", b""))
        self.received += size
        if self.received > self.limits.limit:
            raise BodyTooLarge(self.limits.limit)
        if self.declared is None:  # chunked: held as it arrives
            self._hold(size)
        if not message.get("more_body", False):
            self.complete = True
        elif self.scope.get(DRAINING):  # set by the protocol on shutdown: do not wait for the rest
            raise UploadTimeout(self.limits.timeout or 0, draining=True)

    async def send(self, message):
        # An answer before the whole body was read (401, 404, 413, 408…): the rest is never read, so
        # the connection must close, and the client must be told so or it would reuse it.
        if message["type"] == "http.response.start" and not self.complete:
            message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
        await self._send(message)


async def _receive_by(receive, deadline: float, loop):
    """``await receive()`` with a deadline: ``asyncio.timeout_at`` where there is one (Python 3.11+), which,
    unlike ``wait_for``, does not start a task for every body message."""
    if _timeout_at is None:
        return await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
    async with _timeout_at(deadline):
        return await receive()


_timeout_at = getattr(asyncio, "timeout_at", None)
