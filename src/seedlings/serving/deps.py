"""Request dependencies shared by the routers: the ready predictor, the bearer token, body limits."""

from __future__ import annotations

import asyncio
import hmac

from fastapi import Request

from seedlings.serving.errors import ApiError, BodyTooLarge, UploadTimeout, body_too_large_message, scoped_error
from seedlings.serving.predictor import Predictor
from seedlings.serving.protocol import DRAINING  # set by the HTTP protocol when shutdown begins mid-upload

# Dependencies are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in its thread
# pool: two thread hops per request (GIL hand-overs, wake-ups) for a few attribute reads.


async def ready_predictor(request: Request) -> Predictor:
    """The predictor, or 503 while the model is still loading (or the server is shutting down)."""
    predictor = getattr(request.app.state, "predictor", None)
    if predictor is None or not predictor.ready:
        raise ApiError(503, "not_ready", "the model is still loading; retry in a few seconds",
                       {"Retry-After": "1"})
    return predictor


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
    """

    def __init__(self, app, limit: int, metrics, timeout: float | None = None):
        self.app = app
        self.limit = limit
        self.metrics = metrics
        self.timeout = timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            self.metrics.rejected.labels("body_too_large").inc()
            await scoped_error(scope, 413, "body_too_large", body_too_large_message(self.limit),
                               {"Connection": "close"})(scope, receive, send)
            return
        received = 0
        loop = asyncio.get_running_loop()
        # Only the body is timed: once it is complete, later receives (waiting for a disconnect while
        # a file streams out) are passed through untouched.
        deadline = None if self.timeout is None else loop.time() + self.timeout

        async def limited_receive():
            nonlocal received, deadline
            if deadline is None:
                message = await receive()
            else:
                try:
                    message = await _receive_by(receive, deadline, loop)
                except asyncio.TimeoutError:
                    self.metrics.rejected.labels("upload_timeout").inc()
                    raise UploadTimeout(self.timeout) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
                if not message.get("more_body", False):
                    deadline = None
                elif scope.get(DRAINING):  # set by the protocol on shutdown: do not wait for the rest
                    raise UploadTimeout(self.timeout or 0, draining=True)
            return message

        await self.app(scope, limited_receive, send)


async def _receive_by(receive, deadline: float, loop):
    """``await receive()`` with a deadline: ``asyncio.timeout_at`` where there is one (Python 3.11+), which,
    unlike ``wait_for``, does not start a task for every body message."""
    if _timeout_at is None:
        return await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
    async with _timeout_at(deadline):
        return await receive()


_timeout_at = getattr(asyncio, "timeout_at", None)
