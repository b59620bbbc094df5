"""Every connection gets TCP_NODELAY, also on the listening socket uvicorn binds for --workers N."""

from __future__ import annotations

import asyncio
import socket

import pytest

pytest.importorskip("uvicorn")


async def _nodelay_seen(protocol_class) -> int:
    """Serve one request with uvicorn on a socket bound as uvicorn binds it for workers (protocol 0)."""
    import uvicorn

    seen = []

    class Recording(protocol_class):
        def connection_made(self, transport):
            super().connection_made(transport)
            seen.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    sock = socket.socket(family=socket.AF_INET)  # what uvicorn.Config.bind_socket does
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, http=Recording, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    reader, writer = await asyncio.open_connection(*sock.getsockname())
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 200")
    writer.close()
    server.should_exit = True
    await task
    return seen[0]


def test_plain_uvicorn_leaves_nagle_on_for_a_socket_it_bound_itself():
    from uvicorn.protocols.http.h11_impl import H11Protocol

    assert asyncio.run(_nodelay_seen(H11Protocol)) == 0  # the bug the protocol below works around


def test_seedlings_protocol_turns_nagle_off():
    from seedlings.serving.protocol import NoDelayH11Protocol

    assert asyncio.run(_nodelay_seen(NoDelayH11Protocol)) != 0
