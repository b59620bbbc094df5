"""``POST /v1/feedback``: a correction from the page or a client, stored with its photo (``--feedback-db``).

The service keeps no state per prediction, so the client sends the photo again with its label: any replica
can take it. The photo must be one the predictor would accept (decoded by the same :class:`Decoder`, under
the same limits), and the label one of the model's species, ``other:<name>`` or ``not-a-seedling``; anything
else is a 4xx and nothing is stored. ``201`` means the row is committed. The database down or locked: 503 +
``Retry-After`` for feedback only; predictions and ``/readyz`` do not depend on it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from seedlings.images import pillow_open
from seedlings.serving.deps import check_token, ready_predictor
from seedlings.serving.errors import ApiError, error_responses
from seedlings.serving.predictor import Predictor

router = APIRouter(tags=["feedback"])
log = logging.getLogger("seedlings.serving")

TEXT_MAX = 80  # predicted, model_version
NOTE_MAX = 1000
FIELDS = ("file", "species", "predicted", "confidence", "model_version", "note")
FEEDBACK_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "species"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "the photo (sent again: no state is kept)"},
        "species": {"type": "string", "description": "one of the model's species, 'other:<name>' or "
                                                     "'not-a-seedling'", "maxLength": 86},
        "predicted": {"type": "string", "maxLength": TEXT_MAX, "description": "what the model answered"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "model_version": {"type": "string", "maxLength": TEXT_MAX},
        "note": {"type": "string", "maxLength": NOTE_MAX}}}}}}}


class FeedbackOut(BaseModel):
    id: int
    sha256: str
    stored: bool  # false: the photo was stored already (this is one more vote for it)


class FeedbackBox:
    """The service's feedback store, opened on first use when the database was down at start-up."""

    def __init__(self, url: str, client_mode: str, per_minute: int):
        self.url, self.client_mode = url, client_mode
        self.limiter = RateLimiter(per_minute)
        self._store = None
        self._lock = threading.Lock()

    def open(self):
        from seedlings.feedback.store import Store

        with self._lock:
            if self._store is None:
                self._store = Store(self.url)
            return self._store

    def add(self, data: bytes, image_format: str, size: tuple[int, int], label: str, address: str | None,
            **fields):
        store = self.open()
        client = {"hash": store.client_id(address), "address": address, "none": None}[self.client_mode]
        return store.add(data, image_format, size, label, client=client, **fields)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def start_feedback(settings) -> FeedbackBox | None:
    """The store for ``--feedback-db`` (None when it is off). A schema this version does not write stops the
    service (with the command to run); an unreachable database only logs: feedback answers 503 until it is back."""
    url = settings.feedback_url
    if url is None:
        return None
    from seedlings.feedback.store import FeedbackUnavailable, safe_url

    box = FeedbackBox(url, settings.feedback_client, settings.feedback_per_minute)
    try:
        box.open()
        log.info("feedback is stored in %s", safe_url(url))
    except FeedbackUnavailable as exc:
        log.warning("feedback: %s; POST /v1/feedback answers 503 until it is reachable", exc)
    return box


class RateLimiter:
    """A token bucket per client: ``per_minute`` requests a minute, in bursts of up to that many. Per process
    (each replica and worker counts its own); bounded to ``max_clients`` buckets, the least recent dropped."""

    def __init__(self, per_minute: int, max_clients: int = 10_000):
        self.rate, self.burst, self.max_clients = per_minute / 60.0, float(per_minute), max_clients
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def wait_s(self, client: str, now: float | None = None) -> float:
        """0 when ``client`` may go on (and it is counted); else the seconds until it may."""
        now = time.monotonic() if now is None else now
        tokens, last = self.buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1:
            tokens -= 1
            wait = 0.0
        else:
            wait = (1 - tokens) / self.rate
        self.buckets[client] = (tokens, now)
        while len(self.buckets) > self.max_clients:
            self.buckets.popitem(last=False)
        return wait


@router.post("/v1/feedback", status_code=201, response_model=FeedbackOut, dependencies=[Depends(check_token)],
             openapi_extra=FEEDBACK_BODY, responses=error_responses(400, 401, 404, 408, 413, 415, 422, 429, 503),
             summary="Correct (or confirm) a prediction: the photo and its right species are stored")
async def feedback(request: Request, predictor: Annotated[Predictor, Depends(ready_predictor)]):
    box: FeedbackBox | None = request.app.state.feedback
    if box is None:
        raise ApiError(404, "feedback_off", "this server does not store feedback: its operator can turn it on "
                                            "with --feedback-db URL (SEEDLINGS_FEEDBACK_DB)")
    address = request.client.host if request.client else None
    wait = box.limiter.wait_s(address or "-")
    if wait:
        raise ApiError(429, "too_many_requests", f"too much feedback from this client; retry in {math.ceil(wait)} s",
                       {"Retry-After": str(math.ceil(wait))})
    fields, data = await read_form(request)
    label, extra = check_fields(fields, predictor.model.classes)
    await request.app.state.decoder.decode([(data, "file")])  # the predictor's own checks: 4xx if it would refuse
    header = pillow_open(data)
    extra["model_name"] = predictor.model.name
    saved = await _store(box, data, header.format, header.size, label, address, extra)
    return JSONResponse({"id": saved.id, "sha256": saved.sha256, "stored": saved.stored}, status_code=201)


async def _store(box: FeedbackBox, data, image_format, size, label, address, extra):
    from seedlings.feedback.store import FeedbackUnavailable, SchemaError

    try:
        return await run_in_threadpool(box.add, data, image_format, size, label, address, **extra)
    except (FeedbackUnavailable, SchemaError) as exc:
        log.warning("feedback not stored: %s", exc)
        raise ApiError(503, "feedback_unavailable", f"{exc}; nothing was stored", {"Retry-After": "5"}) from exc


async def read_form(request: Request) -> tuple[dict[str, str], bytes]:
    """The text fields and the photo of a feedback form; 4xx for anything else."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type", f"Content-Type {media or '(none)'}: send multipart/form-data "
                                                      "with fields 'file' (the photo) and 'species'")
    form = await request.form(max_files=1, max_fields=len(FIELDS))
    try:
        unknown = sorted(set(form.keys()) - set(FIELDS))
        if unknown:
            raise ApiError(422, "unknown_field", f"unknown form field(s) {', '.join(unknown)[:200]}; "
                                                 f"the fields are {', '.join(FIELDS)}")
        photo = form.get("file")
        if photo is None:
            raise ApiError(400, "missing_file", "the form has no field 'file': attach the photo again "
                                                "(the server keeps no photo of a prediction)")
        if not isinstance(photo, UploadFile):
            raise ApiError(422, "not_a_file", "form field 'file' holds text, not a file: attach the photo as a file")
        data = await photo.read()
        texts = {}
        for name in FIELDS[1:]:
            value = form.get(name)
            if isinstance(value, UploadFile):
                raise ApiError(422, "invalid_field", f"form field '{name}' must be text, not a file")
            if value is not None:
                texts[name] = value
        return texts, data
    finally:
        await form.close()


def check_fields(fields: dict[str, str], classes) -> tuple[str, dict]:
    """(the stored label, the other columns) from the form's text fields, or 422 naming the field."""
    from seedlings.feedback.labels import LabelError, parse_label

    if "species" not in fields:
        raise ApiError(422, "missing_species", "the form has no field 'species': one of the model's species, "
                                               "'other:<name>' or 'not-a-seedling'")
    try:
        label = parse_label(fields["species"], classes)
    except LabelError as exc:
        raise ApiError(422, "invalid_species", str(exc)) from exc
    extra = {"predicted": _text(fields, "predicted", TEXT_MAX), "note": _text(fields, "note", NOTE_MAX),
             "model_version": _text(fields, "model_version", TEXT_MAX),
             "confidence": _confidence(fields.get("confidence"))}
    return label, extra


def _text(fields: dict, name: str, limit: int) -> str | None:
    value = (fields.get(name) or "").strip()
    if len(value) > limit:
        raise ApiError(422, "invalid_field", f"'{name}' has {len(value)} characters; at most {limit}")
    allowed = "\n\t" if name == "note" else ""  # a note may have lines; the rest are one line
    if any(not ch.isprintable() and ch not in allowed for ch in value):
        raise ApiError(422, "invalid_field", f"'{name}' holds control characters")
    return value or None


def _confidence(raw: str | None) -> float | None:
    if raw is None or not raw.strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise ApiError(422, "invalid_field", f"'confidence' must be a number from 0 to 1, not {raw[:40]!r}")
    return value
