"""Hostile traffic against a real server: the harness a developer runs before a release, CI in short form.

Every case asserts what a hostile client must not achieve: a 5xx, a traceback in the log, unbounded
`/metrics`, memory that grows with the number of clients, or a second request smuggled past the first.
The six holes of issue #21 are cases here (``test_hole_*``), each written to fail on the code before the fix.

Short form (CI): a few dozen generated inputs per property. Before a release, run the long form:

    SEEDLINGS_FUZZ_EXAMPLES=2000 pytest tests/serving/test_serve_hostile.py -p no:cacheprovider

Raw sockets where HTTP clients will not misbehave on purpose; httpx elsewhere.
"""

from __future__ import annotations

import base64
import concurrent.futures
import io
import os
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from tests.serving.conftest import png_bytes, read_until_closed

from seedlings.api import load_model

EXAMPLES = int(os.environ.get("SEEDLINGS_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
BOUND_S = 30
ACCEPTED = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
# Formats Pillow can write that the service must refuse before any decoder sees them.
REFUSED = ("PPM", "PCX", "TGA", "ICO", "SGI", "IM", "DDS", "QOI")


@pytest.fixture(scope="module")
def hostile(start_server):
    """One server for the harness, with limits small enough to reach quickly."""
    return start_server("--max-body-bytes", "3000000", "--max-body-bytes-in-flight", "4000000",
                        "--upload-timeout", "20", "--header-timeout", "5")


@pytest.fixture(scope="module")
def model_name(model_dir):
    return load_model(model_dir).name


def clean_log(server) -> None:
    log = server.log()
    assert "Traceback" not in log and "Exception in ASGI" not in log, log


def metrics_text(server) -> str:
    return httpx.get(server.url + "/metrics", timeout=BOUND_S).text


def raw(port: int, data: bytes) -> bytes:
    """Send ``data`` on one connection and read everything until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND_S) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def image_bytes(fmt: str, size=(40, 48), mode: str = "RGB", seed: int = 0) -> bytes:
    rgb = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), np.uint8))
    img = rgb if mode == "RGB" else rgb.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


# -- the six holes ------------------------------------------------------------------------------------

def test_hole_1_made_up_methods_do_not_grow_metrics(hostile):
    """The first made-up methods add one label set ("other"); 60 more add nothing but counts."""
    def send(methods):
        with httpx.Client(base_url=hostile.url, timeout=BOUND_S) as client:
            for method in methods:
                assert client.request(method, "/healthz").status_code == 405
                assert client.request(method, f"/no-such-path-{method[:8]}").status_code in (404, 405)

    send([f"W{i}{'Q' * 100}" for i in range(5)])
    metrics_text(hostile)  # the scrape's own label set exists from here on
    before = len(metrics_text(hostile))
    methods = [f"M{i}{'Q' * 100}" for i in range(60)]
    send(methods)
    text = metrics_text(hostile)
    assert not any(m[:20] in text for m in methods), "a client-chosen method became a metrics label"
    assert 'method="other"' in text
    assert len(text) - before < 200, f"/metrics grew by {len(text) - before} bytes for 120 more requests"
    clean_log(hostile)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_hole_2_bodies_in_flight_are_bounded(hostile):
    """12 clients each declare a 2.9 MB body and send all of it but the last byte: with 4 MB in flight allowed,
    one is let in and the others get 503 + Retry-After before the server reads their bodies."""
    size = 2_900_000
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {size}\r\n\r\n"
            ).encode()
    before = rss_mb(hostile.proc.pid)
    socks, answers = [], []
    try:
        for _ in range(12):
            sock = socket.create_connection(("127.0.0.1", hostile.port), timeout=BOUND_S)
            sock.sendall(head)
            try:
                sock.sendall(b"\0" * (size - 1))
            except OSError:  # refused and closed while sending: the answer is still there to read
                pass
            socks.append(sock)
        grew = rss_mb(hostile.proc.pid) - before
        for sock in socks:
            sock.settimeout(0.5)
            try:
                answers.append(sock.recv(65536))
            except (TimeoutError, ConnectionResetError):
                answers.append(b"")  # still waiting for its last byte: an admitted upload
    finally:
        for sock in socks:
            sock.close()
    refused = [a for a in answers if a.startswith(b"HTTP/1.1 503 ")]
    assert len(refused) >= 10, answers
    assert all(b"retry-after: 1" in a.lower() and b"connection: close" in a.lower() for a in refused)
    assert grew < 40, f"RSS grew by {grew:.0f} MB while 12 clients sent 2.9 MB each"
    assert 'reason="body_budget"' in metrics_text(hostile)
    clean_log(hostile)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_hole_3_sixteen_bit_grey_over_4_megapixels(hostile, model_name, fmt):
    img = Image.fromarray(np.tile(np.arange(2100, dtype=np.uint16) * 31, (2100, 1)))
    data = png_bytes(img.convert("I;16"), fmt, **({"compression": "tiff_adobe_deflate"} if fmt == "TIFF" else {}))
    r = httpx.post(hostile.url + "/v1/predict", files={"file": ("grey." + fmt.lower(), data)}, timeout=BOUND_S)
    assert r.status_code == 200, r.text
    body = {"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1],
                        "data": [base64.b64encode(data).decode()]}]}
    r = httpx.post(f"{hostile.url}/v2/models/{model_name}/infer", json=body, timeout=BOUND_S)
    assert r.status_code == 200, r.text
    clean_log(hostile)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGBA", "I", "I;16", "F", "CMYK"])
def test_every_mode_over_the_lean_decoding_size(hostile, mode):
    """Over 4 MP an image takes the lean decoding path; every mode Pillow writes to TIFF must work there."""
    rgb = Image.new("RGB", (2100, 2100), (40, 120, 60))
    img = rgb.convert("F") if mode == "F" else rgb.convert("L").convert(mode) if mode.startswith("I") else \
        rgb.convert(mode)
    r = httpx.post(hostile.url + "/v1/predict", content=png_bytes(img, "TIFF", compression="tiff_adobe_deflate"),
                   headers={"Content-Type": "image/tiff"}, timeout=BOUND_S)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("depth", [2000, 100_000])
def test_hole_4_deeply_nested_v2_json(hostile, model_name, depth):
    r = httpx.post(f"{hostile.url}/v2/models/{model_name}/infer", content=b"[" * depth + b"]" * depth,
                   headers={"Content-Type": "application/json"}, timeout=BOUND_S)
    assert r.status_code == 422 and "nested too deeply" in r.json()["error"], r.text
    inner = b'{"inputs":[{"name":"x","datatype":"UINT8","shape":[1],"data":' + b"[" * 3000 + b"]" * 3000 + b"}]}"
    r = httpx.post(f"{hostile.url}/v2/models/{model_name}/infer", content=inner,
                   headers={"Content-Type": "application/json"}, timeout=BOUND_S)
    assert r.status_code == 422, r.text
    clean_log(hostile)


def test_hole_5_content_length_with_transfer_encoding_is_refused_and_closed(hostile):
    smuggled = (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 4\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                b"GET /v1/model HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = raw(hostile.port, smuggled)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert b"Transfer-Encoding" in answer and answer.count(b"HTTP/1.1 ") == 1, answer
    assert 'route="unparsed",status="400"' in metrics_text(hostile)


def test_hole_6_formats_outside_the_allow_list_never_reach_a_decoder(hostile):
    eps = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 40 40\n"
           b"/Helvetica findfont 12 scalefont setfont 0 0 moveto (hi) show showpage\n%%EOF\n")
    for name, data in [("x.eps", eps), *((f"x.{f.lower()}", image_bytes(f)) for f in REFUSED)]:
        r = httpx.post(hostile.url + "/v1/predict", files={"file": (name, data)}, timeout=BOUND_S)
        assert r.status_code == 422 and r.json()["error"]["code"] == "not_an_image", (name, r.text)
        assert "ghostscript" not in r.text.lower()
    clean_log(hostile)


@pytest.mark.parametrize("fmt", ACCEPTED)
def test_the_accepted_formats_are_classified(hostile, fmt):
    r = httpx.post(hostile.url + "/v1/predict", files={"file": ("x", image_bytes(fmt))}, timeout=BOUND_S)
    assert r.status_code == 200, r.text


# -- the smaller findings --------------------------------------------------------------------------------

def test_malformed_requests_and_slow_headers_are_counted(hostile):
    assert raw(hostile.port, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw(hostile.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").startswith(b"HTTP/1.1 408 ")
    text = metrics_text(hostile)
    assert 'reason="bad_request"' in text and 'reason="header_timeout"' in text
    assert 'route="unparsed",status="408"' in text


def test_text_fields_and_cut_bodies_are_named_for_what_they_are(hostile):
    fields = {f"note{i}": "x" for i in range(40)}
    r = httpx.post(hostile.url + "/v1/predict", data=fields, files={"file": ("a.png", png_bytes())},
                   timeout=BOUND_S)
    assert r.status_code == 413 and "form parts" in r.json()["error"]["message"], r.text
    boundary = "b0undary"
    cut = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
           "Content-Type: image/png\r\n\r\n").encode() + png_bytes()
    r = httpx.post(hostile.url + "/v1/predict", content=cut,
                   headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=BOUND_S)
    assert r.status_code == 400 and r.json()["error"]["code"] == "truncated_form", r.text


def test_every_bad_image_of_a_request_is_counted(hostile):
    def count() -> float:
        for line in metrics_text(hostile).splitlines():
            if line.startswith('seedlings_images_rejected_total{reason="not_an_image"}'):
                return float(line.split()[-1])
        return 0.0

    before = count()
    files = [("file", (f"{i}.txt", b"not an image")) for i in range(3)] + [("file", ("ok.png", png_bytes()))]
    assert httpx.post(hostile.url + "/v1/predict", files=files, timeout=BOUND_S).status_code == 422
    assert count() - before == 3


# -- generated inputs (Hypothesis) ---------------------------------------------------------------------

SEEDS = {fmt: image_bytes(fmt, (64, 56), seed=i) for i, fmt in enumerate(ACCEPTED)}


@st.composite
def mutated_image(draw):
    """An accepted image with bytes flipped, cut or spliced: what a broken camera or a fuzzer sends."""
    fmt = draw(st.sampled_from(ACCEPTED))
    data = bytearray(SEEDS[fmt])
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "header"]))
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[pos:pos + draw(st.integers(1, 512))]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        else:  # the header says something else: sizes, depths, counts
            data[min(pos, 40):min(pos, 40) + 4] = draw(st.binary(min_size=4, max_size=4))
        if not data:
            data = bytearray(b"\0")
    return fmt, bytes(data)


@FUZZ
@given(case=mutated_image())
def test_fuzz_mutated_images_get_200_or_a_clean_4xx(hostile, case):
    fmt, data = case
    r = httpx.post(hostile.url + "/v1/predict", files={"file": (f"x.{fmt.lower()}", data)}, timeout=BOUND_S)
    assert r.status_code in (200, 413, 422, 503), (fmt, r.status_code, r.text)
    if r.status_code != 200:
        assert set(r.json()["error"]) == {"code", "message"}


JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                | st.text(max_size=8))  # what JSON can carry: no NaN or infinity
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=20)


@FUZZ
@given(inputs=st.lists(st.fixed_dictionaries({"name": st.text(max_size=10),
                                               "datatype": st.sampled_from(["UINT8", "BYTES", "FP32", "X"]),
                                               "shape": st.lists(st.integers(-2, 70), max_size=5),
                                               "data": JSON_VALUES}), max_size=3),
       extra=st.dictionaries(st.sampled_from(["outputs", "parameters", "id"]), JSON_VALUES, max_size=3))
def test_fuzz_v2_bodies_get_200_or_a_clean_4xx(hostile, model_name, inputs, extra):
    r = httpx.post(f"{hostile.url}/v2/models/{model_name}/infer", json={"inputs": inputs, **extra}, timeout=BOUND_S)
    assert r.status_code in (200, 400, 413, 422, 503), (r.status_code, r.text)
    if r.status_code != 200:
        assert isinstance(r.json()["error"], str)


FRAMING = [
    b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nabcdefg",
    b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
    b"GET /healthz\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 64,  # a TLS ClientHello on the plain port
]


@pytest.mark.parametrize("request_bytes", FRAMING, ids=range(len(FRAMING)))
def test_malformed_framing_gets_a_4xx_and_the_connection_closes(hostile, request_bytes):
    answer = raw(hostile.port, request_bytes)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    assert answer == b"" or 400 <= status < 500, answer[:300]
    assert answer.count(b"HTTP/1.1 ") <= 1


def test_the_server_is_still_well_after_the_harness(hostile):
    """Last: everything above left no traceback, the health check answers at once, /metrics is small."""
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _: httpx.get(hostile.url + "/healthz", timeout=BOUND_S).status_code,
                                 range(20)))
    assert statuses == [200] * 20 and time.monotonic() - started < BOUND_S
    assert len(metrics_text(hostile)) < 60_000
    clean_log(hostile)
