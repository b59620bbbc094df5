"""Open Inference Protocol v2 bodies: JSON, and the binary tensor data extension, in and out.

The binary extension (what ``tritonclient`` sends by default): the body is a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw bytes of each input that has a
``binary_data_size`` parameter, in input order. UINT8 tensors are their bytes, row-major; BYTES
tensors are each element as a 4-byte little-endian length and its bytes. Outputs go back the same
way when the request asks (``binary_data`` on a requested output, or ``binary_data_output`` on the
request when it names no outputs).

Everything here is CPU work on up to ``max_body_bytes`` of input: it runs in a decoding thread,
never on the event loop (a 10 MB JSON body takes ~0.3 s to parse, and /healthz must answer meanwhile).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from seedlings.images import check_dimensions
from seedlings.serving.errors import ApiError

OUTPUT_NAME = "probabilities"
HEADER_LENGTH = "inference-header-content-length"


class RequestInput(BaseModel):
    name: str
    shape: list[int] = Field(..., max_length=8)
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(..., min_length=1, max_length=1)
    outputs: list[RequestOutput] | None = None


@dataclass
class Parsed:
    """An inference request, parsed: its images (encoded bytes or H×W×C uint8 arrays) and what to answer."""

    id: str | None
    sources: list
    input_name: str
    output_name: str
    k: int | None  # classification: top K as strings; None: probabilities
    binary: bool  # answer with the binary extension
    tta: Any


def invalid(message: str, code: str = "invalid_tensor") -> ApiError:
    return ApiError(422, code, message)


# -- requests -------------------------------------------------------------------------------------
def parse(body: bytes, header_length: str | None, max_pixels: int, max_files: int) -> Parsed:
    """The request body → its images and options; raises ApiError (4xx) for anything malformed."""
    head, binary = _split(body, header_length)
    request = _validate(head)
    tensor = request.inputs[0]
    raw = _binary_input(tensor, binary)
    sources = _images(tensor, raw, max_pixels)
    if not sources:
        raise invalid(f"input {tensor.name!r} holds no images")
    if len(sources) > max_files:
        raise ApiError(413, "too_many_files", f"input {tensor.name!r}: {len(sources)} images; at most {max_files} "
                       "per request")
    name, k, binary_out = _outputs_wanted(request)
    return Parsed(request.id, sources, tensor.name, name, k, binary_out, (request.parameters or {}).get("tta"))


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise invalid(f"Inference-Header-Content-Length {header_length!r} must be a number of bytes no larger "
                      f"than the body ({len(body)})", "invalid_request")
    n = int(header_length)
    return body[:n], body[n:]


def _validate(head: bytes) -> InferenceRequest:
    try:
        data = json.loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid(f"the request is not valid JSON ({exc})", "invalid_request") from exc
    except RecursionError:  # '[' * 2000: Python's parser recurses once per level
        raise invalid("the request's JSON is nested too deeply; a v2 request needs a few levels",
                      "invalid_request") from None
    try:
        return InferenceRequest.model_validate(data)
    except RecursionError:
        raise invalid("the request's JSON is nested too deeply; a v2 request needs a few levels",
                      "invalid_request") from None
    except ValidationError as exc:
        parts = [f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}" for e in exc.errors()[:5]]
        raise invalid("; ".join(parts), "invalid_request") from exc


def _binary_input(tensor: RequestInput, binary: bytes) -> bytes | None:
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is None:
        if binary:
            raise invalid("the body has binary data after its JSON header, but no input has binary_data_size")
        if tensor.data is None:
            raise invalid(f"input {tensor.name!r} has neither 'data' nor a binary_data_size parameter",
                          "invalid_request")
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size != len(binary):
        raise invalid(f"input {tensor.name!r}: binary_data_size {size!r} does not match the {len(binary)} "
                      "bytes after the JSON header")
    if tensor.data is not None:
        raise invalid(f"input {tensor.name!r} has both 'data' and binary data")
    return binary


def _images(tensor: RequestInput, raw: bytes | None, max_pixels: int) -> list:
    if any(d < 0 for d in tensor.shape):
        raise invalid(f"input {tensor.name!r}: shape {tensor.shape} has a negative dimension")
    datatype = tensor.datatype.upper()
    if datatype == "UINT8":
        return _uint8_images(tensor, raw, max_pixels)
    if datatype == "BYTES":
        return _bytes_images(tensor, raw)
    raise ApiError(422, "unsupported_datatype", f"input {tensor.name!r}: datatype {tensor.datatype!r} is not "
                   "accepted; send UINT8 pixels [N, H, W, C] or BYTES image files")


def _uint8_images(tensor: RequestInput, raw: bytes | None, max_pixels: int) -> list[np.ndarray]:
    shape = tensor.shape
    if len(shape) not in (3, 4) or shape[-1] not in (1, 3, 4):
        raise invalid(f"input {tensor.name!r}: UINT8 shape must be [H, W, C] or [N, H, W, C] with C = 1, 3 "
                      f"or 4, not {shape}")
    h, w = shape[-3], shape[-2]
    check_dimensions((w, h), max_pixels, tensor.name)  # before the pixels are read
    count = math.prod(shape)
    values = _uint8_from_bytes(tensor, raw, count) if raw is not None else _uint8_from_json(tensor, count)
    return list(values.reshape((-1, h, w, shape[-1])))


def _uint8_from_bytes(tensor: RequestInput, raw: bytes, count: int) -> np.ndarray:
    if len(raw) != count:
        raise invalid(f"input {tensor.name!r}: shape {tensor.shape} holds {count} bytes but {len(raw)} were sent")
    return np.frombuffer(raw, np.uint8)


def _uint8_from_json(tensor: RequestInput, count: int) -> np.ndarray:
    try:
        values = np.asarray(tensor.data)
    except (ValueError, TypeError) as exc:
        raise invalid(f"input {tensor.name!r}: data must be a flat or nested list of integers ({exc})") from exc
    if values.size != count:
        raise invalid(f"input {tensor.name!r}: shape {tensor.shape} holds {count} values but data has "
                      f"{values.size} — they must match")
    # Integers only: floats, booleans and strings are refused, not silently converted.
    if values.size and (values.dtype.kind not in "iu" or values.min() < 0 or values.max() > 255):
        raise invalid(f"input {tensor.name!r}: UINT8 data must be integers 0–255")
    return values.astype(np.uint8).reshape(-1)


def _bytes_images(tensor: RequestInput, raw: bytes | None) -> list[bytes]:
    count = math.prod(tensor.shape)
    items = _deserialize_bytes(tensor, raw) if raw is not None else _base64_items(tensor)
    if len(items) != count:
        raise invalid(f"input {tensor.name!r}: shape {tensor.shape} holds {count} elements but {len(items)} "
                      "were sent")
    return items


def _deserialize_bytes(tensor: RequestInput, raw: bytes) -> list[bytes]:
    """Triton's BYTES serialisation: each element a 4-byte little-endian length, then its bytes."""
    items, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise invalid(f"input {tensor.name!r}: BYTES data ends inside an element's length")
        (n,) = struct.unpack_from("<I", raw, pos)
        if pos + 4 + n > len(raw):
            raise invalid(f"input {tensor.name!r}: BYTES element of {n} bytes runs past the end of the data")
        items.append(raw[pos + 4:pos + 4 + n])
        pos += 4 + n
    return items


def _base64_items(tensor: RequestInput) -> list[bytes]:
    flat = np.asarray(tensor.data, dtype=object).reshape(-1) if tensor.data else []
    out = []
    for i, item in enumerate(flat):
        if not isinstance(item, str):
            raise invalid(f"input {tensor.name!r}[{i}]: BYTES elements in JSON must be base64 strings of "
                          "image files (or send them as binary data)")
        try:
            out.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise invalid(f"input {tensor.name!r}[{i}]: not valid base64 ({exc})") from exc
    return out


def _outputs_wanted(request: InferenceRequest) -> tuple[str, int | None, bool]:
    """The requested output's name, its classification count (None: probabilities) and binary answer."""
    params = request.parameters or {}
    k, binary, name = params.get("classification"), params.get("binary_data_output", False), OUTPUT_NAME
    if request.outputs:
        if len(request.outputs) > 1:
            raise invalid("ask for at most one output")
        out = request.outputs[0]
        name, out_params = out.name, out.parameters or {}
        k, binary = out_params.get("classification", k), out_params.get("binary_data", False)
    if name != OUTPUT_NAME:
        raise ApiError(422, "unknown_output", f"no output {name!r}; this model's output is {OUTPUT_NAME!r}")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
        raise invalid(f"parameters.classification must be a positive integer, not {k!r}")
    if not isinstance(binary, bool):
        raise invalid(f"parameters.binary_data must be true or false, not {binary!r}")
    return name, k or None, binary


# -- responses ------------------------------------------------------------------------------------
def output_tensor(probs: np.ndarray, classes: list[str], name: str, k: int | None) -> tuple[dict, np.ndarray]:
    """The output's JSON description and its values (FP32 probabilities, or BYTES top-K strings)."""
    if k is None:
        values = probs.astype(np.float32)
        return {"name": name, "datatype": "FP32", "shape": list(probs.shape)}, values
    k = min(k, len(classes))
    order = np.argsort(-probs, axis=1)[:, :k]
    strings = [f"{probs[i, j]:.6f}:{j}:{classes[j]}" for i in range(len(probs)) for j in order[i]]
    return {"name": name, "datatype": "BYTES", "shape": [len(probs), k]}, np.array(strings, dtype=object)


def encode(head: dict, tensor: dict, values: np.ndarray, binary: bool) -> tuple[bytes, dict]:
    """The response body and its extra headers: JSON, or JSON header + raw output bytes."""
    if not binary:
        data = values.reshape(-1).tolist()
        return _json({**head, "outputs": [{**tensor, "data": data}]}), {}
    raw = _serialize(values)
    header = _json({**head, "outputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}]})
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


def _serialize(values: np.ndarray) -> bytes:
    if values.dtype == object:
        parts = [s.encode("utf-8") for s in values.reshape(-1)]
        return b"".join(struct.pack("<I", len(p)) + p for p in parts)
    return values.astype("<f4").tobytes()


def _json(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
