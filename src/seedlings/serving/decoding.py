"""Decoding uploads with bounded memory: a pixel budget checked from the headers, and lean decoding of
large photos.

Why: a 7,000 × 7,000 PNG of 143 KB decodes to 147 MB of pixels (more in Pillow's 4-byte layout and
its conversions); 8 concurrent requests of 4 such images drove the server to 851 MB (issue #13),
over the pod's 768 Mi–1 Gi limit. So, before any pixel is decoded:

* each image's size is read from its header (:func:`peek`): JPEGs are charged at their draft size
  (libjpeg decodes them at 1/2, 1/4 or 1/8 scale for free), everything else at full size;
* a request whose images add up to more than ``max_request_pixels`` gets 413 (retrying cannot help);
* a request that would take the pixels in flight in this process over ``max_decode_pixels`` gets 503
  with ``Retry-After`` (retrying can).

Large images (over :data:`LARGE` pixels) are then decoded leanly: JPEG with ``draft``; plain 8-bit RGB
PNG (the hard case: no reduced decoding) by libspng into one array, box-averaged in strips to a few
times the model's size without a second full-size copy; other formats reduced right after decoding.
After a large image, freed memory goes back to the system (``malloc_trim``): glibc otherwise keeps
it, and RSS stays high long after the burst. Images up to :data:`LARGE` pixels (every dataset photo,
most phone photos after JPEG draft) take exactly the old path, so their pixels do not change.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageOps

from seedlings.errors import ImageError
from seedlings.images import PNG_SIGNATURE, check_dimensions, open_image, pillow_open, plain_png_pixels, to_rgb
from seedlings.preprocess import PreprocessSpec, resize_square
from seedlings.serving.errors import ApiError, Overloaded
from seedlings.serving.limits import Budget, release_memory
from seedlings.serving.offload import Offload

LARGE = 4_000_000  # pixels; above this an image is decoded leanly (a 2,000 × 2,000 photo)
OVERSAMPLE = 2  # lean decoding keeps at least this many times the model's input size on the short side
# Modes Image.reduce accepts; others (16-bit grey "I;16" among them) are converted at full size instead.
_REDUCIBLE = ("L", "LA", "RGB", "RGBA", "RGBX", "I", "F")


def peek(source, spec: PreprocessSpec) -> int:
    """Pixels that decoding ``source`` will hold, from its header alone; 0 when the header is unreadable
    (decoding then fails with the image error that names the problem)."""
    if isinstance(source, np.ndarray):
        return int(source.shape[0] * source.shape[1]) if source.ndim >= 2 else 0
    if source[:8] == PNG_SIGNATURE and source[12:16] == b"IHDR" and len(source) >= 24:
        return int.from_bytes(source[16:20], "big") * int.from_bytes(source[20:24], "big")
    try:
        img = pillow_open(source)
        if img.format in ("JPEG", "MPO") and img.width * img.height > LARGE:
            img.draft("RGB", _draft_size(img.size, spec.image_size))
        return img.width * img.height
    except Exception:  # Pillow raises many types on malformed headers; decoding reports them
        return 0


def admit(costs: list[int], budget: Budget, max_request: int) -> int:
    """Take the request's pixels from the budget, or refuse it: 413 over the request limit, 503 when the
    process is busy decoding others. Returns what was taken (give it back when done)."""
    total = sum(costs)
    if total > max_request:
        raise ApiError(413, "too_many_pixels", f"the images add up to {total:,} pixels; at most {max_request:,} "
                       "per request: send smaller photos or fewer per request")
    if not budget.take(total):
        raise Overloaded(1, "decode_budget", f"the server is decoding other large images ({budget.in_use:,} "
                                             "pixels in flight)")
    return total


class Decoder:
    """The first stage of a photo's way through the service: uploads to the model's S×S×3 inputs.

    Owns what decoding needs and nothing else: the offload pool it runs in, the pixel budget of the process,
    the per-photo and per-request limits, and the model's own small-image path (``prepare``, the Model's
    preprocessing). The predictor then only batches and runs the model."""

    def __init__(self, offload: Offload, prepare: Callable, spec: PreprocessSpec, max_pixels: int,
                 max_request_pixels: int, max_decode_pixels: int):
        self.offload, self.prepare, self.spec = offload, prepare, spec
        self.max_pixels, self.max_request = max_pixels, max_request_pixels
        self.budget = Budget(max_decode_pixels)

    async def decode(self, items: list[tuple[object, str | None]]) -> list[np.ndarray]:
        """Each (source, name) decoded in the pool, within the request's and the process's pixel budget."""
        return await self.offload.run(decode_all, items, self.spec, self.max_pixels, self.budget, self.max_request,
                                      self.prepare)


def decode_all(items: list[tuple[object, str | None]], spec: PreprocessSpec, max_pixels: int,
               budget: Budget, max_request: int, small: Callable) -> list[np.ndarray]:
    """Each (source, name) to the model's S×S×3 input, within the budget; runs in a decoding thread.
    ``small(source, name)`` decodes images up to LARGE pixels (the model's own path)."""
    # An image over the per-photo limit costs nothing: it is refused from its header (422 too_large).
    costs = [cost if cost <= max_pixels else 0 for cost in (peek(src, spec) for src, _ in items)]
    taken = admit(costs, budget, max_request)
    try:
        images, failed = [], []
        for (src, name), cost in zip(items, costs):
            try:
                images.append(small(src, name) if cost <= LARGE else decode_large(src, name, spec, max_pixels))
            except ImageError as exc:  # the request fails with the first; the metric counts every bad image
                failed.append(exc)
        if failed:
            failed[0].images = len(failed)
            raise failed[0]
        return images
    finally:
        budget.give(taken)
        if max(costs, default=0) > LARGE:
            release_memory()


def decode_large(source, name: str | None, spec: PreprocessSpec, max_pixels: int) -> np.ndarray:
    if isinstance(source, np.ndarray):
        img = open_image(source, max_pixels, name)
    else:
        img = _lean_png(source, spec, max_pixels, name) if source[:8] == PNG_SIGNATURE else None
        if img is None:
            img = _lean_pillow(source, spec, max_pixels, name)
    return resize_square(img, spec.image_size, spec.interpolation)


def _draft_size(size: tuple[int, int], image_size: int) -> tuple[int, int]:
    """The size to ask JPEG draft for: the short side stays at least OVERSAMPLE × the model's input."""
    w, h = size
    scale = OVERSAMPLE * image_size / min(w, h)
    return max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale))


def _factor(size: tuple[int, int], image_size: int) -> int:
    return max(1, min(size) // (OVERSAMPLE * image_size))


def _lean_png(data: bytes, spec: PreprocessSpec, max_pixels: int, name) -> Image.Image | None:
    """A plain 8-bit RGB PNG decoded by libspng to one array and box-reduced in strips; None otherwise."""
    pixels = plain_png_pixels(data, max_pixels, name)
    if pixels is None:
        return None
    return Image.fromarray(box_reduce(pixels, _factor((pixels.shape[1], pixels.shape[0]), spec.image_size)), "RGB")


def box_reduce(pixels: np.ndarray, f: int) -> np.ndarray:
    """Average f × f blocks of an H×W×C uint8 array, a strip of f rows at a time (no full-size temporary)."""
    if f <= 1:
        return pixels
    h, w = pixels.shape[0] // f, pixels.shape[1] // f
    out = np.empty((h, w, pixels.shape[2]), np.uint8)
    area = f * f
    for row in range(h):
        strip = pixels[row * f:(row + 1) * f, :w * f].reshape(f, w, f, pixels.shape[2])
        sums = strip.sum(axis=(0, 2), dtype=np.uint32)
        out[row] = (sums + area // 2) // area
    return out


def _lean_pillow(data: bytes, spec: PreprocessSpec, max_pixels: int, name) -> Image.Image:
    """Pillow's path (the same checks and errors as open_image), with JPEG draft and an early reduce."""
    try:
        img = pillow_open(data)
    except Exception:
        return open_image(data, max_pixels, name)  # raises the image error that names the problem
    check_dimensions(img.size, max_pixels, name)  # the full size: the limit is per photo as sent
    try:
        if img.format in ("JPEG", "MPO"):
            img.draft("RGB", _draft_size(img.size, spec.image_size))
        img.seek(0)
        img.load()
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError):
        return open_image(data, max_pixels, name)
    f = _factor(img.size, spec.image_size)
    if f > 1 and img.mode in _REDUCIBLE:
        img = img.reduce(f)
    return to_rgb(ImageOps.exif_transpose(img))
