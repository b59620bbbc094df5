"""Connections cannot be held open for free: header and keep-alive timeouts, early answers close, a client
that goes away is a 499 (not a 500 with tracebacks), and shutdown ends stalled uploads at once.

Raw sockets, because HTTP clients will not misbehave on purpose. Every wait has a bound far beyond the
configured timeout, so a busy machine cannot fail them, while a server that never closes still does.
"""

from __future__ import annotations

import select
import socket
import time

import httpx
import pytest
from tests.serving.conftest import png_bytes, read_until_closed

BOUND_S = 20  # far beyond the 1 s timeouts below; the old server held these connections forever


@pytest.fixture(scope="module")
def strict(start_server):
    return start_server("--header-timeout", "1", "--keepalive-timeout", "1", "--upload-timeout", "2",
                        "--max-body-bytes", "100000")


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=BOUND_S)
    return sock


def test_idle_connection_is_closed(strict):
    with connect(strict.port) as sock:
        assert read_until_closed(sock) == b""  # nothing sent, nothing answered: just closed


def test_headers_that_stop_part_way_get_408(strict):
    with connect(strict.port) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"request_timeout" in answer


def test_headers_dripped_a_byte_at_a_time_are_cut_off(strict):
    request = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: " + b"a" * 400 + b"\r\n\r\n"
    with connect(strict.port) as sock:
        started = time.monotonic()
        for i in range(len(request)):  # 0.1 s a byte: 40 s to send it all
            try:
                sock.sendall(request[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            if select.select([sock], [], [], 0.1)[0]:  # the server answered or closed
                break
        sent = i
        answer = read_until_closed(sock)
    assert sent < len(request) - 1, "the server read the whole dripped request"
    assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < BOUND_S


def test_idle_keep_alive_connection_is_closed(strict):
    with connect(strict.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        answer = read_until_closed(sock)  # the answer, then the close once the keep-alive timeout passes
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"status":"ok"}')


def test_chunked_body_over_the_limit_gets_413_and_the_connection_closes(strict):
    chunk = b"%x\r\n%s\r\n" % (65536, b"\0" * 65536)
    with connect(strict.port) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        sent = 0
        for _ in range(800):  # 50 MB, if the server kept reading
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
            if select.select([sock], [], [], 0)[0]:
                break
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"connection: close" in answer.lower(), answer[:300]
    assert sent < 10_000_000, f"the server read {sent:,} bytes past its 100,000-byte limit"


def test_stalled_v2_upload_gets_408_in_the_protocols_shape(strict):
    model = httpx.get(strict.url + "/v1/model", timeout=10).json()["name"].encode()
    with connect(strict.port) as sock:
        sock.sendall(b"POST /v2/models/" + model + b"/infer HTTP/1.1\r\nHost: test\r\nContent-Length: 5000\r\n\r\n"
                     b'{"inputs"')
        answer = read_until_closed(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer[:300]
    assert body.startswith(b'{"error":"the request body did not arrive')


def test_client_disconnect_is_a_499_without_tracebacks(strict):
    before = strict.log()
    with connect(strict.port) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
                     b"Content-Length: 50000\r\n\r\n" + png_bytes()[:100])
        time.sleep(0.3)
    deadline = time.monotonic() + BOUND_S
    metrics = ""
    while time.monotonic() < deadline and 'status="499"' not in metrics:
        time.sleep(0.1)
        metrics = httpx.get(strict.url + "/metrics", timeout=10).text
    assert 'route="/v1/predict",status="499"' in metrics.replace('method="POST",', ""), metrics[-2000:]
    assert 'status="500"' not in metrics
    new_log = strict.log()[len(before):] if strict.log().startswith(before[:200]) else strict.log()
    assert "Traceback" not in new_log and "ERROR" not in new_log, new_log


def test_shutdown_ends_a_stalled_upload_at_once(start_server):
    srv = start_server("--upload-timeout", "60")  # graceful shutdown would wait 35 s, the upload 60 s
    with connect(srv.port) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
                     b"Content-Length: 50000\r\n\r\n" + png_bytes()[:100])
        time.sleep(0.5)
        srv.terminate()
        started = time.monotonic()
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"shutting down" in answer, answer[:300]
    assert srv.proc.wait(BOUND_S) == 0 and time.monotonic() - started < BOUND_S, srv.log()
