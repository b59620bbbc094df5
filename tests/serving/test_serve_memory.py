"""Memory stays bounded whatever the uploads: a pixel budget per request and in flight, checked from the
headers before decoding; lean decoding of large photos; the decoding pool sized from the CPU limit.

No timings are asserted (bench/serve_bench.py --hostile measures those); the memory test reads the
server's own peak RSS (VmHWM), which does not depend on how busy the machine is.
"""

from __future__ import annotations

import concurrent.futures
import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from seedlings.cpus import cpu_limit
from seedlings.images import open_image
from seedlings.preprocess import PreprocessSpec, resize_square
from seedlings.serving.decoding import LARGE, box_reduce, decode_all, decode_large, peek
from seedlings.serving.errors import ApiError, Overloaded
from seedlings.serving.limits import Budget

SPEC = PreprocessSpec(image_size=64)


def encoded(width: int, height: int, fmt: str = "PNG", seed: int = 0) -> bytes:
    """A smooth, cheap-to-make photo-like image (gradients), ``width × height``."""
    small = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 1}))
    return buf.getvalue()


def flat(width: int, height: int) -> bytes:
    """A plain-colour PNG: a few hundred KB that decode to ``width × height`` pixels (a "pixel bomb")."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 60)).save(buf, "PNG", compress_level=9)
    return buf.getvalue()


def full_path(data: bytes) -> np.ndarray:
    return resize_square(open_image(data), SPEC.image_size, SPEC.interpolation)


def test_jpeg_is_charged_and_decoded_at_its_draft_size():
    data = encoded(4000, 3000, "JPEG")
    assert peek(data, SPEC) <= 4000 * 3000 // 16  # libjpeg decodes it at 1/8 (or 1/4) scale
    lean = decode_large(data, "a.jpg", SPEC, 50_000_000)
    assert lean.shape == (64, 64, 3)
    assert np.abs(lean.astype(int) - full_path(data)).mean() < 3  # the same photo, up to resampling


def test_large_png_is_reduced_without_a_second_full_copy():
    data = encoded(2600, 2000)
    assert peek(data, SPEC) == 2600 * 2000 > LARGE
    lean = decode_large(data, "a.png", SPEC, 50_000_000)
    assert lean.shape == (64, 64, 3) and np.abs(lean.astype(int) - full_path(data)).mean() < 3


def test_box_reduce_is_a_block_average():
    pixels = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(pixels).reduce(5))
    np.testing.assert_allclose(box_reduce(pixels, 5).astype(int), expected.astype(int), atol=1)


def test_budget_refuses_before_decoding():
    small = encoded(100, 100)
    decoded = []

    def decode(src, name):
        decoded.append(name)
        return full_path(src)

    with pytest.raises(ApiError) as too_many:  # the request alone is over its limit: 413, nothing decoded
        decode_all([(small, "a"), (small, "b")], SPEC, 50_000_000, Budget(10**9), 15_000, decode)
    assert too_many.value.status == 413 and too_many.value.code == "too_many_pixels"
    busy = Budget(30_000)
    assert busy.take(25_000)  # another request is decoding
    with pytest.raises(Overloaded) as overloaded:
        decode_all([(small, "c")], SPEC, 50_000_000, busy, 10**9, decode)
    assert overloaded.value.retry_after >= 1 and overloaded.value.reason == "decode_budget"
    assert decoded == [] and busy.in_use == 25_000
    busy.give(25_000)
    assert len(decode_all([(small, "d")], SPEC, 50_000_000, busy, 10**9, decode)) == 1 and busy.in_use == 0


def test_cpu_limit_follows_the_cgroup_quota(tmp_path: Path):
    import os

    cpus = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # cgroup v2: 1.5 CPUs
    assert cpu_limit(tmp_path) == min(cpus, 2)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_limit(tmp_path) == cpus
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_limit(v1) == 1
    assert cpu_limit(tmp_path / "nothing") == cpus


def test_request_over_its_pixel_budget_is_413(client):
    """Two 6,000 × 6,000 PNGs (36 M pixels each, under the 50 M per-photo limit) exceed 64 M per request."""
    big = flat(6000, 6000)
    r = client.post("/v1/predict", files=[("file", ("a.png", big, "image/png")), ("file", ("b.png", big, "image/png"))])
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_pixels", r.text


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_concurrent_huge_photos_stay_within_the_budget(start_server):
    """8 concurrent 7,000 × 7,000 PNGs with two decoding threads: one decodes at a time (the rest get 503 +
    Retry-After before decoding), so the peak grows by about one photo (~150 MB), not 8 × 340 MB."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux /proc")
    srv = start_server("--decode-threads", "2")
    photo = flat(7000, 7000)
    before = vm_hwm_mb(srv.proc.pid)

    def send(_):
        return httpx.post(srv.url + "/v1/predict", content=photo, headers={"Content-Type": "image/png"}, timeout=120)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(8)))
    statuses = [r.status_code for r in answers]
    assert set(statuses) <= {200, 503} and 200 in statuses, [r.text for r in answers]
    assert all(int(r.headers["retry-after"]) >= 1 for r in answers if r.status_code == 503)
    grew = vm_hwm_mb(srv.proc.pid) - before
    assert grew < 300, f"peak RSS grew by {grew:.0f} MB"
