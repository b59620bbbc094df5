"""uvicorn's HTTP/1.1 protocol with TCP_NODELAY on every connection.

With ``--workers N`` uvicorn binds the listening socket itself, without a protocol number, and
asyncio only turns Nagle's algorithm off for sockets whose protocol is TCP. A response written in
two parts (head, then body) then waits for the client's delayed ACK: about 40 ms per request,
measured by bench/serve_bench.py --workers 2 (p50 48 ms at concurrency 1, against 8 ms).
"""

from __future__ import annotations

import socket

from uvicorn.protocols.http.h11_impl import H11Protocol


def set_nodelay(transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # the connection is already gone
            pass


class NoDelayH11Protocol(H11Protocol):
    def connection_made(self, transport) -> None:
        set_nodelay(transport)
        super().connection_made(transport)
