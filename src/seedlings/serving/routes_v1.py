"""The service's own API: ``POST /v1/predict`` and ``GET /v1/model``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.datastructures import UploadFile

from seedlings.serving.deps import check_token, decoder_for, ready_predictor
from seedlings.serving.errors import ApiError, error_responses, handler_for
from seedlings.serving.multipart import boundary_of, split_files
from seedlings.serving.paths import public_meta
from seedlings.serving.predictor import Predictor

router = APIRouter(tags=["v1"])
MAX_TOP_K = 1000  # the top_k query parameter's limit (FastAPI validates it; the fast path checks the same)

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
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media == "multipart/form-data":
        body = await request.body()
        _check_file_count(body, content_type, max_files)
        parts = split_files(body, content_type, max_files)
        if parts is None:  # anything unusual: the full parser, with its own errors
            return await _read_multipart(request, max_files)
        files = [(filename or None, data) for name, filename, data in parts if name == "file"]
        if not files:
            raise ApiError(400, "missing_file", f"the form has no field 'file': {HOW_TO_SEND}")
        return files
    if media.startswith("image/") or media == "application/octet-stream":
        return [(None, await request.body())]
    if not media and not await request.body():
        raise ApiError(400, "missing_file", f"the request has no photo: {HOW_TO_SEND}")
    raise ApiError(415, "unsupported_media_type",
                   f"Content-Type {media or '(none)'} is not accepted: {HOW_TO_SEND}")


def _check_file_count(body: bytes, content_type: str, max_files: int) -> None:
    """More parts than ``max_files``: 413 (a limit, as documented), not the form parser's 400; a body cut
    before its closing boundary: 400 that says so (the parser would report a missing field)."""
    boundary = boundary_of(content_type)
    if boundary is None:
        return
    delimiter = b"--" + boundary
    parts = body.count(delimiter + b"\r\n")
    if parts > max_files:
        files = body.count(b"filename=")
        what = f"more than {max_files} files" if files > max_files else \
            f"{parts} form parts ({files} of them files); at most {max_files} parts, only 'file' fields are read"
        raise ApiError(413, "too_many_files", f"{what} in one request; send them in several requests")
    if parts and delimiter + b"--" not in body:
        raise ApiError(400, "truncated_form", "the multipart body ends before its closing boundary "
                       f"(--{boundary.decode('latin-1')}--): the upload was cut off; send it again")


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


@router.post("/v1/predict", response_model=PredictResponse, response_model_exclude_none=True,
             dependencies=[Depends(check_token)], openapi_extra=PREDICT_BODY,
             responses=error_responses(400, 401, 408, 413, 415, 422, 503),
             summary="Identify the species in one or more photos")
async def predict(request: Request,
                  predictor: Annotated[Predictor, Depends(ready_predictor)],
                  top_k: Annotated[int | None, Query(ge=1, le=MAX_TOP_K, description="species per photo (default 5)")]
                  = None,
                  tta: Annotated[bool | None, Query(description="average 8 rotations/flips: a little more "
                                                                "accurate, ~8x slower")] = None):
    settings = request.app.state.settings
    uploads = await read_uploads(request, settings.max_files)
    images = await decoder_for(request.app, predictor).decode([(data, name) for name, data in uploads])
    probs, distance = await predictor.assess(images, settings.tta if tta is None else tta)
    model = predictor.model
    # Built from plain floats and strings in the documented shape, so it skips FastAPI's re-validation
    # through PredictResponse (the schema stays in the OpenAPI document; schemathesis checks it).
    return JSONResponse({"predictions": predictor.predictions(probs, top_k or settings.top_k,
                                                              [n for n, _ in uploads], distance),
                         "model": {"name": model.name, "version": model.version}})


def simple_query(raw: bytes) -> dict | None:
    """``top_k``/``tta`` from a query string that FastAPI would accept as it is; None for anything else
    (other or repeated names, out-of-range or unusual values), which FastAPI then validates."""
    if not raw:
        return {}
    query: dict = {}
    for pair in raw.split(b"&"):
        name, _, value = pair.partition(b"=")
        if name == b"top_k" and "top_k" not in query and value.isdigit() and len(value) <= len(str(MAX_TOP_K)) \
                and 1 <= int(value) <= MAX_TOP_K:
            query["top_k"] = int(value)
        elif name == b"tta" and "tta" not in query and value in (b"true", b"false"):
            query["tta"] = value == b"true"
        else:
            return None
    return query


class PredictFastPath:
    """Pure ASGI middleware: ``POST /v1/predict`` straight to its endpoint, past FastAPI's per-request work.

    On a 2-core machine every millisecond of Python around a photo (routing, dependency solving,
    exception and exit-stack layers) is taken from the model. This takes the plain requests (no root path,
    an empty or plainly valid query) to :func:`predict` directly: the token and readiness checks
    run in the dependencies' order, errors go to the app's own exception handlers, and the route is
    set in the scope as the router would set it (metrics label by it). Everything else, including
    any query string FastAPI must validate, goes through the app as before, so errors do not change.
    Install it inside the body limit, CORS and metrics middleware so they apply to both paths.
    """

    def __init__(self, app, route):
        self.app = app
        self.route = route

    async def __call__(self, scope, receive, send):
        query = None
        if scope["type"] == "http" and scope["path"] == "/v1/predict" and scope["method"] == "POST" \
                and not scope.get("root_path"):
            query = simple_query(scope.get("query_string", b""))
        if query is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        request = Request(scope, receive, send)
        try:
            await check_token(request)
            response = await predict(request, await ready_predictor(request), **query)
        except Exception as exc:
            handler = handler_for(exc)
            if handler is None:
                raise  # ServerErrorMiddleware answers 500 and logs it, as for any route
            response = await handler(request, exc)
        await response(scope, receive, send)


@router.get("/v1/model", response_model=ModelCard, responses=error_responses(503),
            summary="The model card: species, metrics, calibration, how it is served")
async def model_card(request: Request, predictor: Predictor = Depends(ready_predictor)):
    model, settings = predictor.model, request.app.state.settings
    file = model.file  # model.json, typed and validated (seedlings.artifact.ModelFile)
    # The reports are free-form (ModelFile.extra): no paths of the machine that built the model.
    reports = public_meta({k: file.extra.get(k) for k in ("metrics", "export", "created")})
    return {
        "name": file.name, "version": file.version, "backbone": file.backbone,
        "image_size": file.preprocess.image_size, "classes": list(file.classes), "precision": model.precision,
        "backend": model.backend_name, "metrics": reports["metrics"] or {},
        "calibration": public_meta(file.calibration.to_dict()), "unknown": public_meta(file.unknown.to_dict()),
        "export": reports["export"] or {}, "created": reports["created"],
        "serving": {"tta_default": settings.tta, "top_k_default": settings.top_k,
                    "max_batch": predictor.max_batch, "max_wait_ms": predictor.max_wait * 1000,
                    "max_body_bytes": settings.max_body_bytes, "max_files": settings.max_files,
                    "max_pixels": settings.max_pixels, "max_request_pixels": settings.max_request_pixels,
                    "token_required": settings.token is not None,
                    "feedback": request.app.state.feedback is not None},
    }
