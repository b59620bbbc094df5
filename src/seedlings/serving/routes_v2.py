"""Open Inference Protocol v2 (KServe / Triton REST), so standard inference clients work.

One input tensor per request, either

* ``UINT8`` pixels, shape ``[H, W, C]`` or ``[N, H, W, C]`` with C = 1, 3 or 4 (any size: it is
  resized and cropped like an upload), ``data`` flat or nested; or
* ``BYTES`` encoded images (PNG, JPEG, …) as base64 strings, shape ``[N]``.

Output ``probabilities`` (FP32 ``[N, classes]``), or with ``parameters.classification = K``
(on the requested output, as in Triton's classification extension, or on the request)
``BYTES [N, K]`` strings ``"probability:index:species"``. Errors keep the service's shape
``{"error": {"code", "message"}}`` (the protocol's ``error`` string is its ``message``).
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from seedlings import __version__
from seedlings.errors import ImageError
from seedlings.images import MAX_ASPECT, MIN_SIDE
from seedlings.serving.deps import check_token, ready_predictor
from seedlings.serving.errors import ApiError, error_responses
from seedlings.serving.predictor import Predictor

router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"])
OUTPUT_NAME = "probabilities"


class Tensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[Tensor]
    outputs: list[Tensor]


class RequestInput(BaseModel):
    name: str
    shape: list[int] = Field(..., max_length=8)
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(..., min_length=1, max_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


def _served(predictor: Predictor, name: str, version: str | None = None) -> None:
    model = predictor.model
    if name != model.name:
        raise ApiError(404, "model_not_found", f"no model {name!r} here; this server serves {model.name!r}")
    if version is not None and version != model.version:
        raise ApiError(404, "model_not_found", f"model {name!r} has no version {version!r}; "
                       f"this server serves version {model.version!r}")


@router.get("", summary="Server metadata")
async def server_metadata():
    return {"name": "seedlings", "version": __version__, "extensions": ["classification"]}


@router.get("/health/live", summary="The process is alive")
async def live():
    return {"live": True}


@router.get("/health/ready", summary="The model is loaded and warmed",
            responses={503: {"description": "not ready"}})
async def ready(request: Request):
    predictor = getattr(request.app.state, "predictor", None)
    is_ready = bool(predictor is not None and predictor.ready)
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


def _metadata(predictor: Predictor) -> dict:
    model = predictor.model
    return {"name": model.name, "versions": [model.version], "platform": "onnxruntime_onnx",
            "inputs": [{"name": "image", "datatype": "UINT8", "shape": [-1, -1, -1, 3]},
                       {"name": "image_bytes", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, len(model.classes)]}]}


@router.get("/models/{name}", response_model=ModelMetadata, responses=error_responses(404, 503),
            summary="Model metadata: inputs (one of them per request) and outputs")
async def model_metadata(name: str, predictor: Predictor = Depends(ready_predictor)):
    _served(predictor, name)
    return _metadata(predictor)


@router.get("/models/{name}/versions/{version}", response_model=ModelMetadata,
            responses=error_responses(404, 503), summary="Model metadata for one version")
async def model_version_metadata(name: str, version: str, predictor: Predictor = Depends(ready_predictor)):
    _served(predictor, name, version)
    return _metadata(predictor)


@router.get("/models/{name}/ready", responses=error_responses(404, 503), summary="Model readiness")
async def model_ready(name: str, predictor: Predictor = Depends(ready_predictor)):
    _served(predictor, name)
    return {"name": name, "ready": True}


def _invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_tensor", message)


def _check_shape(tensor: RequestInput) -> int:
    count = math.prod(tensor.shape)
    if count != len(tensor.data) and count != _nested_count(tensor.data):
        raise _invalid(f"input {tensor.name!r}: shape {tensor.shape} holds {count} values but data has "
                       f"{len(tensor.data)} (flat) — they must match")
    return count


def _nested_count(data: list) -> int:
    try:
        return int(np.asarray(data, dtype=object).size)
    except (ValueError, TypeError):
        return -1


def _uint8_images(tensor: RequestInput, max_pixels: int) -> list[np.ndarray]:
    shape = tensor.shape
    if len(shape) not in (3, 4) or shape[-1] not in (1, 3, 4):
        raise _invalid(f"input {tensor.name!r}: UINT8 shape must be [H, W, C] or [N, H, W, C] with C = 1, 3 "
                       f"or 4, not {shape}")
    h, w = shape[-3], shape[-2]
    if h * w > max_pixels:
        raise ImageError(f"{w}×{h} pixels is over the limit of {max_pixels:,}", "too_large", tensor.name)
    if min(h, w) < MIN_SIDE or max(h, w) / max(1, min(h, w)) > MAX_ASPECT:
        raise ImageError(f"{w}×{h} pixels is not a usable photo (each side ≥ {MIN_SIDE} px, "
                         f"aspect ≤ {MAX_ASPECT:g}:1)", "bad_dimensions", tensor.name)
    _check_shape(tensor)
    try:
        values = np.asarray(tensor.data, dtype=np.int64).reshape(shape)
    except (ValueError, TypeError, OverflowError) as exc:
        raise _invalid(f"input {tensor.name!r}: UINT8 data must be integers 0–255 ({exc})") from exc
    if values.size and (values.min() < 0 or values.max() > 255):
        raise _invalid(f"input {tensor.name!r}: UINT8 values must be 0–255")
    batch = values.astype(np.uint8).reshape((-1, h, w, shape[-1]))
    return list(batch)


def _bytes_images(tensor: RequestInput) -> list[bytes]:
    _check_shape(tensor)
    out = []
    for i, item in enumerate(np.asarray(tensor.data, dtype=object).reshape(-1)):
        if not isinstance(item, str):
            raise _invalid(f"input {tensor.name!r}[{i}]: BYTES elements must be base64 strings of "
                           "image files")
        try:
            out.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise _invalid(f"input {tensor.name!r}[{i}]: not valid base64 ({exc})") from exc
    return out


def _decode(predictor: Predictor, tensor: RequestInput, max_pixels: int, max_files: int) -> list[np.ndarray]:
    """The request's tensor → the model's S×S×3 uint8 inputs (runs in a thread: decoding is CPU work)."""
    datatype = tensor.datatype.upper()
    if any(d < 0 for d in tensor.shape):
        raise _invalid(f"input {tensor.name!r}: shape {tensor.shape} has a negative dimension")
    if datatype == "UINT8":
        sources = _uint8_images(tensor, max_pixels)
    elif datatype == "BYTES":
        sources = _bytes_images(tensor)
    else:
        raise ApiError(422, "unsupported_datatype",
                       f"input {tensor.name!r}: datatype {tensor.datatype!r} is not "
                       "accepted; send UINT8 pixels [N, H, W, C] or BYTES base64-encoded image files")
    if not sources:
        raise _invalid(f"input {tensor.name!r} holds no images")
    if len(sources) > max_files:
        raise _invalid(f"input {tensor.name!r}: {len(sources)} images; at most {max_files} per request")
    return [predictor.prepare(src, f"{tensor.name}[{i}]") for i, src in enumerate(sources)]


def _classification(body: InferenceRequest) -> tuple[str, int | None]:
    """The requested output name and its top-K classification count (None: raw probabilities)."""
    k = (body.parameters or {}).get("classification")
    name = OUTPUT_NAME
    if body.outputs:
        if len(body.outputs) > 1:
            raise _invalid("ask for at most one output")
        name = body.outputs[0].name
        k = (body.outputs[0].parameters or {}).get("classification", k)
    if name != OUTPUT_NAME:
        raise ApiError(422, "unknown_output", f"no output {name!r}; this model's output is {OUTPUT_NAME!r}")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise _invalid(f"parameters.classification must be a positive integer, not {k!r}")
    return name, k


def _outputs(predictor: Predictor, probs: np.ndarray, name: str, k: int | None) -> list[dict]:
    classes = predictor.model.classes
    if k is None:
        return [{"name": name, "datatype": "FP32", "shape": list(probs.shape),
                 "data": probs.astype(np.float32).reshape(-1).tolist()}]
    k = min(k, len(classes))
    order = np.argsort(-probs, axis=1)[:, :k]
    data = [f"{probs[i, j]:.6f}:{j}:{classes[j]}" for i in range(len(probs)) for j in order[i]]
    return [{"name": name, "datatype": "BYTES", "shape": [len(probs), k], "data": data}]


async def _infer(request: Request, name: str, version: str | None, body: InferenceRequest,
                 predictor: Predictor) -> dict:
    _served(predictor, name, version)
    settings = request.app.state.settings
    out_name, k = _classification(body)
    tta = (body.parameters or {}).get("tta", settings.tta)
    if not isinstance(tta, bool):
        raise _invalid(f"parameters.tta must be true or false, not {tta!r}")
    images = await predictor.decode(_decode, predictor, body.inputs[0], settings.max_pixels,
                                    settings.max_files)
    probs = await predictor.probabilities(images, tta)
    return {"model_name": predictor.model.name, "model_version": predictor.model.version, "id": body.id,
            "outputs": _outputs(predictor, probs, out_name, k)}


INFER_ERRORS = error_responses(401, 404, 413, 415, 422, 503)


@router.post("/models/{name}/infer", response_model=InferenceResponse, response_model_exclude_none=True,
             dependencies=[Depends(check_token)], responses=INFER_ERRORS, summary="Classify images")
async def infer(name: str, body: InferenceRequest, request: Request,
                predictor: Predictor = Depends(ready_predictor)):
    return await _infer(request, name, None, body, predictor)


@router.post("/models/{name}/versions/{version}/infer", response_model=InferenceResponse,
             response_model_exclude_none=True, dependencies=[Depends(check_token)], responses=INFER_ERRORS,
             summary="Classify images with one model version")
async def infer_version(name: str, version: str, body: InferenceRequest, request: Request,
                        predictor: Predictor = Depends(ready_predictor)):
    return await _infer(request, name, version, body, predictor)
