"""Every image kind the issue names opens as correct RGB; broken ones fail with a clear code."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from seedlings.errors import ImageError
from seedlings.images import DEFAULT_MAX_PIXELS, check_dimensions, open_image


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


RED = (200, 30, 30)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"])
def test_formats_open_as_rgb(fmt):
    img = open_image(encode(Image.new("RGB", (64, 48), RED), fmt))
    assert img.mode == "RGB" and img.size == (64, 48)
    r, g, b = img.getpixel((10, 10))
    assert r > 150 and g < 80 and b < 80


@pytest.mark.parametrize("mode", ["L", "1", "P", "LA", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr"])
def test_modes_convert_to_rgb(mode):
    if mode == "I;16":
        src = Image.fromarray(np.full((50, 60), 40000, np.uint16))
    elif mode == "I":
        src = Image.fromarray(np.full((50, 60), 40000, np.int32))
    elif mode == "F":
        src = Image.fromarray(np.full((50, 60), 0.5, np.float32))
    else:
        src = Image.new("RGB", (60, 50), (120, 120, 120)).convert(mode)
    fmt = "TIFF" if mode in ("CMYK", "I;16", "I", "F", "YCbCr") else "PNG"
    if mode == "YCbCr":
        fmt = "JPEG"
    img = open_image(encode(src, fmt))
    assert img.mode == "RGB" and img.size == (60, 50)
    value = np.asarray(img).mean()
    assert 100 < value < 170, f"{mode}: mean {value} is not mid-grey"


def test_sixteen_bit_png_scaled_not_clipped():
    arr = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    img = open_image(encode(Image.fromarray(arr), "PNG"))
    out = np.asarray(img)[..., 0]
    assert out.min() <= 2 and out.max() >= 253 and len(np.unique(out)) > 200


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    assert np.asarray(open_image(encode(rgba, "PNG"))).min() == 255
    pal = Image.new("P", (40, 40), 0)
    pal.info["transparency"] = 0
    assert np.asarray(open_image(encode(pal, "PNG", transparency=0))).min() == 255


def test_exif_orientation_applied():
    img = Image.new("RGB", (80, 40), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 40, 40))  # white on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    out = open_image(encode(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.size == (40, 80)
    top, bottom = np.asarray(out)[:30].mean(), np.asarray(out)[50:].mean()
    assert top > 200 and bottom < 50


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (32, 32), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    r, g, b = open_image(buf.getvalue()).getpixel((5, 5))
    assert r > 200 and b < 50


@pytest.mark.parametrize("size", [(50, 50), (4000, 3000)])
def test_small_and_large_sizes(size):
    img = open_image(encode(Image.new("RGB", size, RED), "PNG"))
    assert img.size == size


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming a huge image, with almost no data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize("data,code", [
    (b"", "empty"),
    (b"hello, this is text", "not_an_image"),
    (bomb_png(100_000, 100_000), "too_large"),
    (bomb_png(10_000, 2), "bad_dimensions"),
])
def test_bad_inputs_have_codes(data, code):
    with pytest.raises(ImageError) as info:
        open_image(data, name="upload.png")
    assert info.value.code == code
    assert "upload.png" in str(info.value)


def test_truncated_image():
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "PNG")
    with pytest.raises(ImageError) as info:
        open_image(data[: len(data) // 2])
    assert info.value.code in ("truncated", "unreadable")


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        open_image(tmp_path / "nope.png")


def test_arrays_and_pil_inputs():
    arr = np.zeros((30, 40, 3), np.uint8)
    assert open_image(arr).size == (40, 30)
    assert open_image(np.zeros((30, 40), np.float32)).mode == "RGB"
    assert open_image(Image.new("L", (20, 20))).mode == "RGB"
    with pytest.raises(ImageError):
        open_image(np.zeros((3, 3, 3, 3), np.uint8))


def _png(arr: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def spng_calls(monkeypatch):
    """Counts libspng decodes; pyspng is part of the serve extra (skipped without it, failed in CI)."""
    import os

    import seedlings.images as images

    if images.pyspng is None:
        if os.environ.get("CI") == "true":
            pytest.fail("pyspng is required in CI (the serve extra installs it)")
        pytest.skip("pyspng not installed")
    calls = []
    real = images.pyspng.load
    monkeypatch.setattr(images.pyspng, "load", lambda data: calls.append(1) or real(data))
    return calls


def test_plain_rgb_png_takes_libspng_and_gives_pillows_pixels(spng_calls):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    img = open_image(_png(arr, "RGB"))
    assert spng_calls == [1]
    assert img.mode == "RGB" and img.size == (53, 37) and np.array_equal(np.asarray(img), arr)


def test_other_pngs_take_pillows_path(spng_calls):
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (20, 20, 4), dtype=np.uint8)
    grey = rng.integers(0, 256, (20, 20), dtype=np.uint8)
    for data in (_png(rgba, "RGBA"), _png(grey, "L")):
        assert open_image(data).mode == "RGB"
    assert spng_calls == []


def test_broken_plain_png_still_gets_its_error(spng_calls):
    data = _png(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")
    with pytest.raises(ImageError) as err:
        open_image(data[: len(data) // 2])
    assert err.value.code in ("truncated", "unreadable") and spng_calls == [1]
    huge = bytearray(data)
    huge[16:24] = (100_000).to_bytes(4, "big") * 2  # 10¹⁰ pixels claimed in the header
    with pytest.raises(ImageError) as err:
        open_image(bytes(huge))
    assert err.value.code == "too_large" and spng_calls == [1]  # refused before any decoding


def test_png_with_a_text_exif_profile_takes_pillows_path(spng_calls):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", "exif\n      10\n45786966000049492a00")
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buf, format="PNG", pnginfo=info)
    assert open_image(buf.getvalue()).size == (16, 16)
    assert spng_calls == []


@pytest.mark.parametrize(("size", "code"), [((100_000, 100_000), "too_large"), ((400, 4), "bad_dimensions"),
                                            ((2000, 20), "bad_dimensions")])
def test_check_dimensions_is_the_rule_every_path_applies(size, code):
    """The public check the service reuses: open_image refuses a PNG (libspng's path or Pillow's) with its words."""
    with pytest.raises(ImageError) as rule:
        check_dimensions(size, DEFAULT_MAX_PIXELS, "x.png")
    assert rule.value.code == code
    data = bytearray(_png(np.zeros((20, 20, 3), np.uint8), "RGB"))
    data[16:24] = size[0].to_bytes(4, "big") + size[1].to_bytes(4, "big")  # the header claims `size`
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # a valid IHDR, so Pillow reads it too
    with pytest.raises(ImageError) as opened:
        open_image(bytes(data), name="x.png")
    assert (opened.value.code, str(opened.value)) == (code, str(rule.value))
    check_dimensions((150, 150), DEFAULT_MAX_PIXELS)  # a dataset photo passes


def test_every_accepted_format_has_its_decoder_registered():
    from PIL import Image

    from seedlings.images import FORMATS

    assert set(FORMATS) <= set(Image.OPEN), set(FORMATS) - set(Image.OPEN)
