"""A corpus of bad and odd inputs: each gets a 4xx JSON error (or, if usable, a prediction), never a crash."""

from __future__ import annotations

import io
import socket
import struct
import time
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image
from tests.serving.conftest import png_bytes

TEN_MB = 10 * 1024 * 1024


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width × height`` pixels, without the pixels: a bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def image_in_mode(mode: str, fmt: str) -> bytes:
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    if mode == "P+transparency":
        img = rgb.convert("P")
        return png_bytes(img, fmt, transparency=0)
    if mode == "I;16":
        img = Image.fromarray(np.arange(40 * 48, dtype=np.uint16).reshape(40, 48) * 30).convert("I;16")
    elif mode == "F":
        img = Image.fromarray(np.linspace(0, 1, 40 * 48, dtype=np.float32).reshape(40, 48))
    else:
        img = rgb.convert(mode)
    return png_bytes(img, fmt)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 40), c) for c in ("red", "green", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def multipage_tiff() -> bytes:
    pages = [Image.new("L", (40, 40), v) for v in (10, 120, 250)]
    buf = io.BytesIO()
    pages[0].save(buf, "TIFF", save_all=True, append_images=pages[1:])
    return buf.getvalue()


def jpeg_with_exif_rotation() -> bytes:
    img = Image.fromarray(np.random.default_rng(2).integers(0, 255, (30, 60, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° when shown
    return png_bytes(img, "JPEG", exif=exif.tobytes())


def assert_error(r, status: int, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"code", "message"} and err["message"]
    if code:
        assert err["code"] == code, err


NOISY_JPEG = png_bytes(Image.fromarray(np.random.default_rng(3).integers(0, 255, (200, 200, 3), np.uint8)),
                       "JPEG")
BAD_UPLOADS = {
    "zero bytes": (b"", "empty"),
    "text file": (b"species,notes\nCharlock,looks like mustard\n", "not_an_image"),
    "html": (b"<html><script>alert(1)</script></html>", "not_an_image"),
    "truncated png": (png_bytes()[:200], "truncated"),
    "truncated jpeg": (NOISY_JPEG[:len(NOISY_JPEG) // 2], "truncated"),
    "jpeg header cut": (NOISY_JPEG[:300], "unreadable"),
    "png header only": (png_header_only(64, 64), None),
    "decompression bomb": (png_header_only(100_000, 100_000), "too_large"),
    "one pixel high": (png_bytes(Image.new("RGB", (400, 1))), "bad_dimensions"),
    "absurd aspect": (png_bytes(Image.new("RGB", (2000, 20))), "bad_dimensions"),
    "tiny": (png_bytes(Image.new("RGB", (4, 4))), "bad_dimensions"),
    "zero width header": (png_header_only(0, 50), None),
}


@pytest.mark.parametrize("name", BAD_UPLOADS)
def test_bad_upload_is_a_422(client, name):
    data, code = BAD_UPLOADS[name]
    started = time.perf_counter()
    r = client.post("/v1/predict", files={"file": (f"{name}.png", data, "image/png")})
    assert_error(r, 422, code)
    assert time.perf_counter() - started < 5  # a bomb is refused from its header, not decoded
    raw = client.post("/v1/predict", content=data, headers={"Content-Type": "image/png"})
    assert_error(raw, 422, code)


@pytest.mark.parametrize(("mode", "fmt"), [
    ("1", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("P+transparency", "PNG"), ("RGB", "PNG"),
    ("RGBA", "PNG"), ("I;16", "PNG"), ("I", "TIFF"), ("F", "TIFF"), ("CMYK", "JPEG"), ("CMYK", "TIFF"),
    ("YCbCr", "JPEG"), ("RGB", "WEBP"), ("RGB", "BMP"), ("L", "JPEG"), ("LAB", "TIFF"), ("HSV", "PNG"),
])
def test_every_mode_is_classified(client, mode, fmt):
    if mode == "HSV":
        data = png_bytes(Image.new("HSV", (40, 40), (60, 200, 200)).convert("RGB"), fmt)
    else:
        data = image_in_mode(mode, fmt)
    r = client.post("/v1/predict", files={"file": (f"img.{fmt.lower()}", data, "application/octet-stream")})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("maker", [animated_gif, multipage_tiff, jpeg_with_exif_rotation])
def test_multi_frame_and_exif(client, maker):
    r = client.post("/v1/predict", files={"file": ("x", maker(), "application/octet-stream")})
    assert r.status_code == 200, r.text


def test_request_shape_errors(client):
    assert_error(client.post("/v1/predict"), 400, "missing_file")
    assert_error(client.post("/v1/predict", files={"photo": ("a.png", png_bytes(), "image/png")}), 400,
                 "missing_file")
    assert_error(client.post("/v1/predict", data={"file": "hello"},
                             files={"other": ("a.png", png_bytes(), "image/png")}), 422, "not_a_file")
    assert_error(client.post("/v1/predict", content=b"hello", headers={"Content-Type": "text/plain"}), 415,
                 "unsupported_media_type")
    assert_error(client.post("/v1/predict", json={"file": "x"}), 415, "unsupported_media_type")
    assert_error(client.post("/v1/predict", content=b"--x\r\nbroken", headers={
        "Content-Type": "multipart/form-data; boundary=x"}), 400)
    many = [("file", (f"{i}.png", png_bytes(), "image/png")) for i in range(33)]
    assert_error(client.post("/v1/predict", files=many), 413, "too_many_files")


def test_body_over_limit_is_413(client):
    big = b"\0" * (TEN_MB + 1)
    assert_error(client.post("/v1/predict", content=big, headers={"Content-Type": "image/png"}), 413,
                 "body_too_large")

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(11):
            yield b"\0" * (1024 * 1024)

    assert_error(client.post("/v1/predict", content=chunks(), headers={"Content-Type": "image/png"}), 413,
                 "body_too_large")
    files = {"file": ("big.png", big, "image/png")}
    assert_error(client.post("/v1/predict", files=files), 413, "body_too_large")
    v2 = client.post("/v2/models/x/infer", content=big, headers={"Content-Type": "application/json"})
    assert v2.status_code == 413 and v2.headers["seedlings-error-code"] == "body_too_large"
    assert "10 MiB" in v2.json()["error"] and "10.5" not in v2.json()["error"]


def test_server_survives_the_corpus(client):
    assert client.get("/healthz").status_code == 200
    metrics = client.get("/metrics").text
    assert 'status="5' not in metrics, "a bad input caused a server error"
    assert 'seedlings_images_rejected_total{reason="too_large"}' in metrics


def _raw_exchange(port: int, head: bytes, timeout: float = 30) -> tuple[bytes, float]:
    """Send ``head`` (headers and part of a body), then stall; return what the server answers and when."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and answer.rstrip().endswith(b"}"):
                break
    return answer, time.monotonic() - started


def test_stalled_upload_gets_408_and_frees_the_connection(start_server):
    srv = start_server("--upload-timeout", "1")
    head = (b"POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\n"
            + png_bytes()[:100])
    answer, waited = _raw_exchange(srv.port, head)
    status, _, rest = answer.partition(b"\r\n")
    assert b" 408 " in status, answer[:300]
    assert b'"request_timeout"' in rest and 0.9 <= waited < 15
    assert httpx.get(srv.url + "/healthz").status_code == 200
    assert 'seedlings_images_rejected_total{reason="upload_timeout"}' in httpx.get(srv.url + "/metrics").text


def test_model_wait_over_the_request_timeout_is_503(start_server):
    """The image waits 2 s for its batch but the request may wait 0.3 s: 503 timeout, not a hung client."""
    srv = start_server("--request-timeout", "0.3", "--max-wait-ms", "2000", "--no-idle-dispatch")
    r = httpx.post(srv.url + "/v1/predict", content=png_bytes(), headers={"Content-Type": "image/png"}, timeout=30)
    assert_error(r, 503, "timeout")
    assert int(r.headers["retry-after"]) >= 1
