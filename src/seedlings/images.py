"""Safe image opening: any format, mode, size or EXIF orientation in, an RGB image out.

Pillow reads only the header on ``Image.open``; we check the pixel count there, before any
decoding, so a decompression bomb costs nothing. Plain 8-bit RGB PNGs (the dataset's format) are
decoded by libspng when ``pyspng`` is installed (the ``serve`` extra): the same pixels in half
Pillow's time; anything else, and anything libspng refuses, takes Pillow's path.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import (  # the decoders of FORMATS, registered by importing them (and no other plugin)
    BmpImagePlugin,  # noqa: F401
    GifImagePlugin,  # noqa: F401
    Image,
    ImageOps,
    JpegImagePlugin,  # noqa: F401
    MpoImagePlugin,  # noqa: F401  (JPEG's decoder hands multi-picture files to it)
    PngImagePlugin,  # noqa: F401
    TiffImagePlugin,  # noqa: F401
    UnidentifiedImageError,
    WebPImagePlugin,  # noqa: F401
)

from seedlings.errors import ImageError

try:
    import pyspng
except ImportError:  # optional: Pillow decodes everything, only slower for PNG
    pyspng = None

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".gif"}
)
# The formats any decoder may see: Pillow knows ~40 (EPS among them, which runs Ghostscript on the
# upload), so Image.open is always given this list. The JPEG decoder also opens phones' MPO files.
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "DIB", "TIFF", "GIF")
DEFAULT_MAX_PIXELS = 50_000_000  # ~7,000 × 7,000; far beyond any seedling photo
MIN_SIDE = 8
MAX_ASPECT = 20.0

Image.MAX_IMAGE_PIXELS = None  # we enforce our own limit, with a clear error, before decoding


def is_image_name(name: str) -> bool:
    """True for a visible file whose extension Pillow can read."""
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def open_image(source, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None) -> Image.Image:
    """Open a path, bytes, PIL image or uint8 array as an upright RGB image.

    Raises ImageError with a ``code`` (empty, not_an_image, too_large, bad_dimensions,
    truncated, unreadable) and a message that names the source.
    """
    if isinstance(source, Image.Image):
        return to_rgb(ImageOps.exif_transpose(source))
    if isinstance(source, np.ndarray):
        return _from_array(source)
    label = name or (str(source) if isinstance(source, (str, Path)) else None)
    data = _read_bytes(source, label)
    if not data:
        raise ImageError("the file is empty (0 bytes)", "empty", label)
    fast = _plain_png(data, max_pixels, label)
    if fast is not None:
        return fast
    try:
        img = pillow_open(data)
    except UnidentifiedImageError as exc:
        raise ImageError("not an image in an accepted format (PNG, JPEG, WebP, BMP, TIFF, GIF)",
                         "not_an_image", label) from exc
    except Exception as exc:  # Pillow raises many types on malformed headers
        raise ImageError(f"unreadable image header ({exc})", "unreadable", label) from exc
    check_dimensions(img.size, max_pixels, label)
    try:
        img.seek(0)  # animated or multi-frame: the first frame
        img.load()
        img = ImageOps.exif_transpose(img)
        return to_rgb(img)
    except OSError as exc:
        code = "truncated" if "truncated" in str(exc).lower() else "unreadable"
        raise ImageError(f"cannot decode the image ({exc})", code, label) from exc
    except (ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise ImageError(f"cannot decode the image ({exc})", "unreadable", label) from exc


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def pillow_open(data: bytes) -> Image.Image:
    """``Image.open`` limited to :data:`FORMATS` (header only; nothing decoded yet). Raises
    UnidentifiedImageError for any other format, before its decoder sees a byte."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Image.open(io.BytesIO(data), formats=FORMATS)


def _plain_png(data: bytes, max_pixels: int, label) -> Image.Image | None:
    pixels = plain_png_pixels(data, max_pixels, label)
    return None if pixels is None else Image.fromarray(pixels, "RGB")


def plain_png_pixels(data: bytes, max_pixels: int, label=None) -> np.ndarray | None:
    """An 8-bit RGB PNG without EXIF or animation, decoded by libspng to one H×W×3 array once its header's
    size has passed :func:`check_dimensions`; None for every other input (Pillow's path decodes those)."""
    if pyspng is None or len(data) < 33 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    if data[24] != 8 or data[25] != 2:  # bit depth 8, colour type RGB
        return None
    if b"eXIf" in data or b"Raw profile type exif" in data or b"acTL" in data:  # orientation, animation
        return None
    size = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    check_dimensions(size, max_pixels, label)
    try:
        pixels = pyspng.load(data)
    except Exception:  # let Pillow decode it and name the problem
        return None
    if pixels.dtype != np.uint8 or pixels.shape != (size[1], size[0], 3):
        return None
    return pixels


def _read_bytes(source, label) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if hasattr(source, "read"):
        return source.read()
    try:
        return Path(source).read_bytes()
    except FileNotFoundError as exc:
        raise ImageError("no such file", "not_found", label) from exc
    except IsADirectoryError as exc:
        raise ImageError("is a folder, not an image", "not_an_image", label) from exc
    except OSError as exc:
        raise ImageError(f"cannot read the file ({exc.strerror})", "unreadable", label) from exc


def check_dimensions(size: tuple[int, int], max_pixels: int, label=None) -> None:
    """Refuse a (width, height) over ``max_pixels`` (too_large) or unusable as a photo (bad_dimensions),
    from the header alone: every decoding path (Pillow, libspng, v2 pixel tensors) calls this one."""
    w, h = size
    if w * h > max_pixels:
        raise ImageError(
            f"{w}×{h} = {w * h:,} pixels is over the limit of {max_pixels:,}; resize the photo first",
            "too_large", label)
    if min(w, h) < MIN_SIDE or max(w, h) / max(1, min(w, h)) > MAX_ASPECT:
        raise ImageError(
            f"{w}×{h} pixels is not a usable photo (each side ≥ {MIN_SIDE} px, aspect ≤ {MAX_ASPECT:g}:1)",
            "bad_dimensions", label)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited over white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(img)), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    arr = arr.astype(np.float64)
    hi = float(arr.max()) if arr.size else 0.0
    if hi <= 1.0:
        arr = arr * 255.0
    elif hi > 255.0:
        arr = arr / 257.0  # 16-bit range
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ImageError(f"an image array must be H×W, H×W×3 or H×W×4, not {arr.shape}", "bad_dimensions")
    if arr.dtype != np.uint8:
        arr = _to_uint8(arr)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.shape[2] == 4:
        return to_rgb(Image.fromarray(np.ascontiguousarray(arr), "RGBA"))
    return Image.fromarray(np.ascontiguousarray(arr), "RGB")
