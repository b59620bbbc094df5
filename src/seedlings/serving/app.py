"""The FastAPI application: ``create_app(settings)`` wires settings, model, routes and middleware.

A factory (not a module-level app) so tests and ``--workers`` processes each build their own
app from explicit settings instead of patching globals. Nothing here imports torch.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from seedlings import __version__
from seedlings.serving.decoding import Decoder
from seedlings.serving.deps import BodyLimitMiddleware, ready_or_none
from seedlings.serving.errors import error_response, error_responses, install_error_handlers
from seedlings.serving.follow import Follower, prepare_following
from seedlings.serving.limits import Budget, release_memory
from seedlings.serving.metrics import Metrics, MetricsMiddleware
from seedlings.serving.offload import Offload
from seedlings.serving.predictor import Predictor
from seedlings.serving.protocol import report_refusals_to
from seedlings.serving.routes_feedback import router as feedback_router
from seedlings.serving.routes_feedback import start_feedback
from seedlings.serving.routes_v1 import PredictFastPath
from seedlings.serving.routes_v1 import router as v1_router
from seedlings.serving.routes_v2 import router as v2_router
from seedlings.serving.settings import Settings

STATIC_DIR = Path(__file__).parent / "static"
log = logging.getLogger("seedlings.serving")

# The page loads only its own files; uploads are previewed from blob: URLs.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# /docs: Swagger UI from the package (static/swagger-ui), never a CDN. FastAPI's page starts
# Swagger UI with an inline script and Swagger UI sets inline styles, hence 'unsafe-inline';
# everything else, fetches included, stays on this server.
DOCS_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                               "script-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
SWAGGER_UI = "/static/swagger-ui"


@asynccontextmanager
async def lifespan(app: FastAPI):
    """Ready only once the model is loaded and warmed; on shutdown finish queued work first."""
    settings: Settings = app.state.settings
    from starlette.concurrency import run_in_threadpool

    follower = Follower.of(app)  # --model REGISTRY: its current version, followed (serving/follow.py)
    predictor = await run_in_threadpool(Predictor.load, follower.model_settings() if follower else settings,
                                        app.state.metrics)
    app.state.feedback = await run_in_threadpool(start_feedback, settings)
    # A photo's way, one direction: Decoder (uploads → inputs, in the offload pool) → Predictor (batches,
    # the model) → the route encodes the answer.
    offload = Offload(settings.decoding_threads())
    app.state.offload = offload
    app.state.decoder = Decoder(offload, predictor.model.prepare, predictor.model.spec, settings.max_pixels,
                                settings.max_request_pixels, settings.max_decode_pixels)
    await predictor.start()
    release_memory()  # loading and warming up freed some heap that glibc would otherwise keep
    app.state.predictor = predictor
    if follower is not None:
        follower.start()
    try:
        yield
    finally:
        log.info("shutting down: finishing queued requests")
        if follower is not None:
            await follower.stop()
        await app.state.predictor.stop(drain_timeout=settings.request_timeout_s)  # the one in service now
        offload.shutdown()
        if app.state.feedback is not None:
            app.state.feedback.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service for ``settings`` (default: from ``SEEDLINGS_*`` environment variables)."""
    settings = settings or Settings()
    app = FastAPI(title="seedlings", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Identify plant seedlings from photos. Errors are always "
                              '`{"error": {"code", "message"}}` with a 4xx (or 503) status.')
    app.state.settings = settings
    app.state.metrics = Metrics()
    report_refusals_to(app.state.metrics.observe_refused)
    app.state.predictor = None
    app.state.feedback = None
    install_error_handlers(app)
    app.include_router(v1_router)
    app.include_router(feedback_router)
    app.include_router(v2_router)
    _add_operational_routes(app)
    _add_page(app)
    _add_docs(app)
    # Added innermost first: metrics see every response, including CORS preflights and 413s.
    app.add_middleware(PredictFastPath, route=next(r for r in v1_router.routes if r.path == "/v1/predict"))
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes, metrics=app.state.metrics,
                       timeout=settings.upload_timeout_s, in_flight=Budget(settings.max_body_bytes_in_flight))
    if settings.cors_origin_list:
        app.add_middleware(JsonCORSMiddleware, allow_origins=settings.cors_origin_list,
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    prepare_following(app)  # --model REGISTRY: counts requests by the model they started on, outermost
    return app


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` and worker processes: settings from the environment."""
    return create_app(Settings())


def _add_operational_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="The model is loaded and warmed",
             responses=error_responses(503))
    async def readyz(request: Request):
        predictor = ready_or_none(request.app)
        if predictor is None:
            return JSONResponse({"error": {"code": "not_ready", "message": "the model is not loaded yet"}},
                                status_code=503, headers={"Retry-After": "1"})
        model = predictor.model
        return {"status": "ready", "model": {"name": model.name, "version": model.version,
                                             "precision": model.precision}}

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics (404 here with --metrics-port)",
             response_class=Response, responses={200: {"content": {"text/plain": {}}}, **error_responses(404)})
    async def metrics(request: Request):
        port = request.app.state.settings.metrics_port
        if port is not None:
            return error_response(404, "not_found", f"/metrics is served on port {port} only (--metrics-port)")
        body, content_type = request.app.state.metrics.render()
        return Response(body, media_type=content_type)


class JsonCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with refused preflights in the service's JSON error shape instead of plain text."""

    def preflight_response(self, request_headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
        return error_response(response.status_code, "cors_rejected",
                              f"{response.body.decode(errors='replace')}; allowed origins are set by "
                              "SEEDLINGS_CORS_ORIGINS", headers)


def _add_page(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def _add_docs(app: FastAPI) -> None:
    """OpenAPI reference at /docs that works offline: Swagger UI's files are served by the app."""

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request):
        root = request.scope.get("root_path", "").rstrip("/")  # behind a proxy that strips a prefix
        html = get_swagger_ui_html(
            openapi_url=root + app.openapi_url, title=f"{app.title} API",
            swagger_js_url=f"{root}{SWAGGER_UI}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{SWAGGER_UI}/swagger-ui.css",
            swagger_favicon_url=f"{root}{SWAGGER_UI}/favicon-32x32.png",
            # Swagger UI would otherwise show a badge image fetched from validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None})
        html.headers.update(DOCS_HEADERS)
        return html
