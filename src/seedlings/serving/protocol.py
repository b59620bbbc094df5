"""uvicorn's HTTP/1.1 protocol with TCP_NODELAY, a header timeout, and no free rides on a connection.

* TCP_NODELAY: with ``--workers N`` uvicorn binds the listening socket itself, without a protocol number,
  and asyncio only turns Nagle's algorithm off for sockets whose protocol is TCP. A response written in
  two parts (head, then body) then waits for the client's delayed ACK: about 40 ms per request,
  measured by bench/serve_bench.py --workers 2 (p50 48 ms at concurrency 1, against 8 ms).
* Header timeout: uvicorn times out idle keep-alive connections only *after* a response. A connection
  that sends nothing, stops part-way through its headers, or sends a header byte every few seconds was
  held open for as long as the client liked. Here every request's headers must be complete within
  ``SEEDLINGS_HEADER_TIMEOUT_S`` of the connection opening (or of the request's first byte on a
  keep-alive connection); otherwise the connection is closed (408 if it had sent part of a request).
* A response sent before the request body has arrived (413, 401, 408…) closes the connection.
  uvicorn would otherwise keep reading, and discarding, the rest of the body for as long as it came.
* Framing: a request with both Content-Length and Transfer-Encoding is refused (400) and the connection
  closed (RFC 9112 §6.3). h11 frames it as chunked; a proxy that frames it by Content-Length would see
  a different request boundary, and a request hidden in the body would be answered (smuggling).
* Requests refused here, before the app sees them (400, 408), are counted in the app's metrics.
* Shutdown: a request still uploading its body is told at once (its scope gets ``seedlings.draining``
  and its ``receive`` wakes up; the body limit middleware answers 408 and closes), instead of holding
  the drain until the upload timeout.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
from collections.abc import Callable

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

DRAINING = "seedlings.draining"  # scope key: shutdown began while this request was uploading
DEFAULT_HEADER_TIMEOUT_S = 10.0
log = logging.getLogger("seedlings.serving")
_refused: Callable[[int, str], None] | None = None


def report_refusals_to(observer: Callable[[int, str], None] | None) -> None:
    """``observer(status, reason)`` hears of each request refused here (the app's metrics: one app a process)."""
    global _refused
    _refused = observer


def _report(status: int, reason: str) -> None:
    if _refused is not None:
        _refused(status, reason)


class StrictConnection(h11.Connection):
    """h11's server side, refusing the framing that makes request smuggling possible."""

    refusal: str | None = None

    def next_event(self):
        event = super().next_event()
        if isinstance(event, h11.Request):
            names = {name for name, _ in event.headers}  # h11 gives them lower-cased
            if b"transfer-encoding" in names and b"content-length" in names:
                self.refusal = ("the request has both Content-Length and Transfer-Encoding; send one of them "
                                "(RFC 9112 section 6.3)")
                raise h11.RemoteProtocolError(self.refusal)
        return event


@functools.lru_cache(maxsize=1)
def header_timeout() -> float:
    """``SEEDLINGS_HEADER_TIMEOUT_S`` (set by ``serve`` for every worker process), read once per process."""
    try:
        return float(os.environ.get("SEEDLINGS_HEADER_TIMEOUT_S") or DEFAULT_HEADER_TIMEOUT_S)
    except ValueError:
        return DEFAULT_HEADER_TIMEOUT_S


def _timeout_response() -> bytes:
    body = json.dumps({"error": {"code": "request_timeout",
                                 "message": "the request headers did not arrive in time"}}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def set_nodelay(transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # the connection is already gone
            pass


class NoDelayH11Protocol(H11Protocol):
    """See the module docstring; the name stays for its first feature."""

    _header_timer = None
    _partial = False  # bytes of a request whose headers are not complete yet have arrived

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.conn = StrictConnection(h11.SERVER, self.conn._max_incomplete_event_size)

    def connection_made(self, transport) -> None:
        set_nodelay(transport)
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_request():
            self._partial = True
            if self._header_timer is None:  # keep-alive: the next request's headers start now
                self._arm_header_timer()
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if not self._awaiting_request():  # the headers are complete: a request cycle is running
            self._cancel_header_timer()
            self._partial = False

    def on_response_complete(self) -> None:
        unread_body = self.conn.their_state is h11.SEND_BODY
        super().on_response_complete()
        if unread_body and not self.transport.is_closing():
            self.transport.close()  # answered early (413, 401…): never read the rest of the body

    def shutdown(self) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.more_body:
            cycle.scope[DRAINING] = True
            cycle.message_event.set()
        super().shutdown()

    def send_400_response(self, msg: str) -> None:
        """A malformed request, answered in the service's JSON error shape (uvicorn's is plain text)."""
        msg = self.conn.refusal or msg
        _report(400, "bad_request")
        body = json.dumps({"error": {"code": "bad_request", "message": msg}}).encode()
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n"
                             b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        self.transport.close()

    # -- the header timer --------------------------------------------------------------------------
    def _awaiting_request(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(header_timeout(), self._header_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._awaiting_request():
            return
        if self._partial:
            _report(408, "header_timeout")
            self.transport.write(_timeout_response())
        log.debug("closing a connection whose request headers did not arrive within %gs", header_timeout())
        self.transport.close()
