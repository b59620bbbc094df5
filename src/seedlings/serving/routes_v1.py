"""The service's own API: ``POST /v1/predict`` and ``GET /v1/model``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.datastructures import UploadFile

from seedlings.serving.deps import check_token, ready_predictor
from seedlings.serving.errors import ApiError, error_responses
from seedlings.serving.predictor import Predictor

router = APIRouter(tags=["v1"])

RAW_TYPES = ("application/octet-stream", "image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp",
             "image/tiff")
HOW_TO_SEND = ("send photos as multipart/form-data field 'file' (repeat it for several photos) "
               "or one photo as the raw body with Content-Type image/*")
_binary = {"type": "string", "format": "binary"}
PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "array", "items": _binary, "description": "one or more photos"}}}},
    **{t: {"schema": _binary} for t in RAW_TYPES[:3]},
}}}


class TopK(BaseModel):
    species: str
    probability: float


class PredictionOut(BaseModel):
    species: str
    confidence: float
    unknown: bool
    top_k: list[TopK]
    file: str | None = None


class ModelRef(BaseModel):
    name: str
    version: str


class PredictResponse(BaseModel):
    predictions: list[PredictionOut]
    model: ModelRef


class ModelCard(BaseModel):
    name: str
    version: str
    backbone: str
    image_size: int
    classes: list[str]
    precision: str
    backend: str
    metrics: dict = {}
    calibration: dict = {}
    unknown: dict = {}
    export: dict = {}
    created: str | None = None
    serving: dict = {}


async def read_uploads(request: Request, max_files: int) -> list[tuple[str | None, bytes]]:
    """(file name, bytes) of each photo in the request, whichever way it was sent."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        return await _read_multipart(request, max_files)
    if media.startswith("image/") or media == "application/octet-stream":
        return [(None, await request.body())]
    if not media and not await request.body():
        raise ApiError(400, "missing_file", f"the request has no photo: {HOW_TO_SEND}")
    raise ApiError(415, "unsupported_media_type",
                   f"Content-Type {media or '(none)'} is not accepted: {HOW_TO_SEND}")


async def _read_multipart(request: Request, max_files: int) -> list[tuple[str | None, bytes]]:
    form = await request.form(max_files=max_files, max_fields=max_files)
    try:
        fields = form.getlist("file")
        if not fields:
            raise ApiError(400, "missing_file", f"the form has no field 'file': {HOW_TO_SEND}")
        uploads = []
        for field in fields:
            if not isinstance(field, UploadFile):
                raise ApiError(422, "not_a_file", "form field 'file' holds text, not a file: "
                               "attach the photo as a file (curl -F file=@photo.jpg)")
            uploads.append((field.filename or None, await field.read()))
        return uploads
    finally:
        await form.close()


def _decode_all(predictor: Predictor, uploads):
    return [predictor.prepare(data, name) for name, data in uploads]


@router.post("/v1/predict", response_model=PredictResponse, response_model_exclude_none=True,
             dependencies=[Depends(check_token)], openapi_extra=PREDICT_BODY,
             responses=error_responses(400, 401, 413, 415, 422, 503),
             summary="Identify the species in one or more photos")
async def predict(request: Request,
                  top_k: int | None = Query(None, ge=1, le=1000, description="species per photo (default 5)"),
                  tta: bool | None = Query(None, description="average 8 rotations/flips: a little more "
                                                             "accurate, ~8x slower"),
                  predictor: Predictor = Depends(ready_predictor)):
    settings = request.app.state.settings
    uploads = await read_uploads(request, settings.max_files)
    images = await predictor.decode(_decode_all, predictor, uploads)
    probs, distance = await predictor.assess(images, settings.tta if tta is None else tta)
    model = predictor.model
    # Built from plain floats and strings in the documented shape, so it skips FastAPI's re-validation
    # through PredictResponse (the schema stays in the OpenAPI document; schemathesis checks it).
    return JSONResponse({"predictions": predictor.predictions(probs, top_k or settings.top_k,
                                                              [n for n, _ in uploads], distance),
                         "model": {"name": model.name, "version": model.version}})


@router.get("/v1/model", response_model=ModelCard, responses=error_responses(503),
            summary="The model card: species, metrics, calibration, how it is served")
async def model_card(request: Request, predictor: Predictor = Depends(ready_predictor)):
    model, settings = predictor.model, request.app.state.settings
    meta = model.meta
    return {
        "name": model.name, "version": model.version, "backbone": meta.get("backbone", ""),
        "image_size": model.spec.image_size, "classes": model.classes, "precision": model.precision,
        "backend": model.backend_name, "metrics": meta.get("metrics", {}),
        "calibration": meta.get("calibration", {}), "unknown": meta.get("unknown", {}),
        "export": meta.get("export", {}), "created": meta.get("created"),
        "serving": {"tta_default": settings.tta, "top_k_default": settings.top_k,
                    "max_batch": predictor.max_batch, "max_wait_ms": predictor.max_wait * 1000,
                    "max_body_bytes": settings.max_body_bytes, "max_files": settings.max_files,
                    "max_pixels": settings.max_pixels, "token_required": settings.token is not None},
    }
