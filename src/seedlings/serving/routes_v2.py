"""Open Inference Protocol v2 (KServe / Triton REST), so standard inference clients work unmodified.

One input tensor per request, either

* ``UINT8`` pixels, shape ``[H, W, C]`` or ``[N, H, W, C]`` with C = 1, 3 or 4 (any size: it is
  resized and cropped like an upload), ``data`` flat or nested integers; or
* ``BYTES`` encoded images (PNG, JPEG, …), shape ``[N]``: base64 strings in JSON;

each either in the JSON ``data`` or as binary data after the JSON header (the binary tensor data
extension, tritonclient's default). The body is JSON whatever its Content-Type says.

Output ``probabilities`` (FP32 ``[N, classes]``), or with ``parameters.classification = K``
(on the requested output, as in Triton's classification extension, or on the request)
``BYTES [N, K]`` strings ``"probability:index:species"``; binary when asked (``binary_data``).
Errors have the protocol's shape ``{"error": "<message>"}``; the machine-readable code is in the
``Seedlings-Error-Code`` header.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from seedlings import __version__
from seedlings.serving import v2_codec
from seedlings.serving.deps import check_token, decoder_for, ready_or_none, ready_predictor
from seedlings.serving.errors import ApiError, v2_error_responses
from seedlings.serving.predictor import Predictor
from seedlings.serving.v2_codec import OUTPUT_NAME, InferenceRequest

router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"])


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


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None  # absent when the output is sent as binary data


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
    is_ready = ready_or_none(request.app) is not None
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


def _metadata(predictor: Predictor) -> dict:
    model = predictor.model
    return {"name": model.name, "versions": [model.version], "platform": "onnxruntime_onnx",
            "inputs": [{"name": "image", "datatype": "UINT8", "shape": [-1, -1, -1, 3]},
                       {"name": "image_bytes", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, len(model.classes)]}]}


@router.get("/models/{name}", response_model=ModelMetadata, responses=v2_error_responses(404, 503),
            summary="Model metadata: inputs (one of them per request) and outputs")
async def model_metadata(name: str, predictor: Predictor = Depends(ready_predictor)):
    _served(predictor, name)
    return _metadata(predictor)


@router.get("/models/{name}/versions/{version}", response_model=ModelMetadata,
            responses=v2_error_responses(404, 503), summary="Model metadata for one version")
async def model_version_metadata(name: str, version: str, predictor: Predictor = Depends(ready_predictor)):
    _served(predictor, name, version)
    return _metadata(predictor)


@router.get("/models/{name}/ready", responses=v2_error_responses(404, 503), summary="Model readiness")
async def model_ready(name: str, predictor: Predictor = Depends(ready_predictor)):
    _served(predictor, name)
    return {"name": name, "ready": True}


async def _infer(request: Request, name: str, version: str | None, predictor: Predictor) -> Response:
    _served(predictor, name, version)
    settings = request.app.state.settings
    body = await request.body()
    parsed = await request.app.state.offload.run(v2_codec.parse, body, request.headers.get(v2_codec.HEADER_LENGTH),
                                                 settings.max_pixels, settings.max_files)
    tta = settings.tta if parsed.tta is None else parsed.tta
    if not isinstance(tta, bool):
        raise v2_codec.invalid(f"parameters.tta must be true or false, not {tta!r}")
    names = [f"{parsed.input_name}[{i}]" for i in range(len(parsed.sources))]
    images = await decoder_for(request.app, predictor).decode(list(zip(parsed.sources, names)))
    probs = await predictor.probabilities(images, tta)
    model = predictor.model
    head: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if parsed.id is not None:
        head["id"] = parsed.id
    tensor, values = v2_codec.output_tensor(probs, model.classes, parsed.output_name, parsed.k)
    content, headers = v2_codec.encode(head, tensor, values, parsed.binary)
    media = "application/octet-stream" if parsed.binary else "application/json"
    return Response(content, media_type=media, headers=headers)


INFER_ERRORS = {200: {"content": {"application/octet-stream": {}}},  # binary outputs, when asked for
                **v2_error_responses(401, 404, 408, 413, 422, 503)}


def _inline(schema, defs: dict | None = None):
    """A pydantic JSON schema with its ``$defs`` references written out, for an OpenAPI requestBody."""
    if defs is None:
        defs = schema.pop("$defs", {}) if isinstance(schema, dict) else {}
    if isinstance(schema, dict):
        ref = schema.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return _inline(dict(defs[ref.split("/")[-1]]), defs)
        return {k: _inline(v, defs) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_inline(v, defs) for v in schema]
    return schema


INFER_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _inline(InferenceRequest.model_json_schema())},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                 "description": "binary tensor data extension: a JSON header of "
                                                "Inference-Header-Content-Length bytes, then the tensors' bytes"},
}}}


@router.post("/models/{name}/infer", response_model=InferenceResponse, dependencies=[Depends(check_token)],
             responses=INFER_ERRORS, openapi_extra=INFER_BODY, summary="Classify images")
async def infer(name: str, request: Request, predictor: Predictor = Depends(ready_predictor)):
    return await _infer(request, name, None, predictor)


@router.post("/models/{name}/versions/{version}/infer", response_model=InferenceResponse,
             dependencies=[Depends(check_token)], responses=INFER_ERRORS, openapi_extra=INFER_BODY,
             summary="Classify images with one model version")
async def infer_version(name: str, version: str, request: Request,
                        predictor: Predictor = Depends(ready_predictor)):
    return await _infer(request, name, version, predictor)
