"""``seedlings serve``: flags over ``SEEDLINGS_*`` variables, checked up front, then uvicorn.

The model folder is checked before uvicorn starts so a wrong ``--model`` is one clear line
and exit code 1, not a traceback from inside a worker process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import tempfile

from seedlings.errors import SeedlingsError, missing_extra

# flag → Settings field, for flags that were given (None means "not given": keep env/default)
FLAG_FIELDS = ("model_dir", "host", "port", "workers", "precision", "tta", "top_k", "batching", "max_batch",
               "max_wait_ms", "idle_dispatch", "queue_size", "max_body_bytes", "max_pixels", "max_files",
               "cors_origins", "request_timeout_s", "upload_timeout_s", "json_logs", "log_level", "threads",
               "decode_threads", "max_request_pixels", "max_decode_pixels", "header_timeout_s",
               "keepalive_timeout_s", "metrics_port", "max_body_bytes_in_flight", "feedback_db",
               "feedback_per_minute", "feedback_client", "registry_poll_s")


def add_parser(sub) -> argparse.ArgumentParser:
    """Add the ``serve`` subparser to ``sub`` and return it; its handler is :func:`cmd_serve`."""
    p = sub.add_parser("serve", help="the web service: HTTP API, web page, metrics",
                       description="Serve a model over HTTP. Every flag also reads SEEDLINGS_<NAME> "
                                   "(e.g. SEEDLINGS_PORT); flags win. SEEDLINGS_API_TOKEN sets a bearer "
                                   "token for prediction endpoints (not a flag: flags show in `ps`).")
    p.add_argument("--model", dest="model_dir", help="exported model folder, or a registry folder (`seedlings "
                                                    "promote`): serve its current version and follow it "
                                                    "(default: the packaged model)")
    p.add_argument("--registry-poll", type=float, dest="registry_poll_s",
                   help="with --model REGISTRY: seconds between two reads of its current pointer")
    p.add_argument("--host", help="address to listen on (0.0.0.0 in containers)")
    p.add_argument("--port", type=int, help="TCP port")
    p.add_argument("--workers", type=int, help="server processes, each with its own model")
    p.add_argument("--precision", choices=["fp32", "int8"], help="int8 needs `export --precision int8`")
    p.add_argument("--tta", action="store_true", default=None, help="test-time augmentation by default")
    p.add_argument("--top-k", type=int, dest="top_k", help="species per photo when the request does not say")
    p.add_argument("--no-batching", action="store_false", dest="batching", default=None,
                   help="run each image on its own (for comparison)")
    p.add_argument("--max-batch", type=int, dest="max_batch", help="images per model run")
    p.add_argument("--max-wait-ms", type=float, dest="max_wait_ms",
                   help="longest wait for a batch to fill, from its first image, ms")
    p.add_argument("--no-idle-dispatch", action="store_false", dest="idle_dispatch", default=None,
                   help="make a request that finds the model idle wait --max-wait-ms for company too "
                        "(by default it runs at once; the wait applies to images queued behind a busy model)")
    p.add_argument("--queue-size", type=int, dest="queue_size", help="queue places before 503 (a TTA image takes 8)")
    p.add_argument("--max-body-bytes", type=int, dest="max_body_bytes", help="request body limit, bytes")
    p.add_argument("--max-body-bytes-in-flight", type=int, dest="max_body_bytes_in_flight",
                   help="request bodies held per worker, all requests together, bytes; beyond it 503 + "
                        "Retry-After before the body is read")
    p.add_argument("--max-pixels", type=int, dest="max_pixels", help="pixels per image")
    p.add_argument("--max-files", type=int, dest="max_files", help="photos per request")
    p.add_argument("--max-request-pixels", type=int, dest="max_request_pixels",
                   help="decoded pixels per request, all photos together; beyond it 413")
    p.add_argument("--max-decode-pixels", type=int, dest="max_decode_pixels",
                   help="decoded pixels in flight per worker; beyond it 503 + Retry-After")
    p.add_argument("--cors-origins", dest="cors_origins", help="comma-separated origins, or '*'")
    p.add_argument("--request-timeout", type=float, dest="request_timeout_s",
                   help="longest wait for the model, seconds; then 503")
    p.add_argument("--upload-timeout", type=float, dest="upload_timeout_s",
                   help="longest time for a request body to arrive, seconds; then 408")
    p.add_argument("--header-timeout", type=float, dest="header_timeout_s",
                   help="longest time for a request's headers to arrive, seconds; then the connection closes")
    p.add_argument("--keepalive-timeout", type=float, dest="keepalive_timeout_s",
                   help="an idle keep-alive connection closes after this many seconds")
    p.add_argument("--metrics-port", type=int, dest="metrics_port",
                   help="serve /metrics on this port only, not on --port (keep it off the Ingress)")
    p.add_argument("--feedback-db", dest="feedback_db",
                   help="store corrections sent to POST /v1/feedback in this database: sqlite:///path/feedback.db "
                        "or postgresql+psycopg://… (put a password in SEEDLINGS_FEEDBACK_DB, not a flag)")
    p.add_argument("--feedback-per-minute", type=int, dest="feedback_per_minute",
                   help="feedback requests per client and minute, per worker; beyond it 429")
    p.add_argument("--feedback-client", dest="feedback_client", choices=["hash", "address", "none"],
                   help="what is stored of a feedback client's address")
    p.add_argument("--json-logs", action="store_true", default=None, dest="json_logs")
    p.add_argument("--log-level", dest="log_level", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--threads", type=int, help="ONNX Runtime threads per worker (default: CPUs / workers)")
    p.add_argument("--decode-threads", type=int, dest="decode_threads",
                   help="threads decoding uploads per worker (default: CPUs / workers)")
    _show_defaults(p)
    return p


def _show_defaults(p: argparse.ArgumentParser) -> None:
    """Each setting's help ends with its real default, read from Settings: it cannot drift from the code."""
    try:
        from seedlings.serving.settings import Settings
    except ImportError:  # the serve extra is missing: `serve` will say so when it runs
        return
    for action in p._actions:
        field = Settings.model_fields.get(action.dest)
        if field is None or not action.help or field.default is None or "default:" in action.help:
            continue
        value = field.default
        if isinstance(value, bool):
            shown = "on" if value else "off"
        elif value == "":
            shown = "none"
        else:  # counts of pixels and bytes with thousands separators; ports and small numbers as they are
            shown = f"{value:,}" if isinstance(value, int) and value >= 100_000 else str(value)
        action.help += f" (default: {shown})"


def build_settings(args):
    """Settings from the environment, overridden by the flags that were given."""
    try:
        from pydantic import ValidationError

        from seedlings.serving.settings import Settings
    except ImportError as exc:
        raise missing_extra("serve", exc.name or "fastapi") from exc
    given = {f: getattr(args, f) for f in FLAG_FIELDS if getattr(args, f, None) is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                             for e in exc.errors())
        raise SeedlingsError(f"invalid setting ({problems}); check the flags and SEEDLINGS_* variables") \
            from exc


def check_model(settings) -> str:
    """Fail fast, with the exact problem, before any process starts: model.json through the one validating
    loader (ModelFile), the ONNX file's sha256, ONNX Runtime opening it, its output width against the classes."""
    from seedlings.inference import resolve_model_dir
    from seedlings.registry import Registry, is_registry
    from seedlings.serving.modelcheck import check_model_dir

    if is_registry(settings.model_dir):  # its current version now; the service follows the registry
        registry = Registry(settings.model_dir)
        check_model_dir(registry.current_dir(), settings.precision)
        return str(registry.root.resolve())
    model_dir = resolve_model_dir(settings.model_dir)
    check_model_dir(model_dir, settings.precision)
    return str(model_dir.resolve())


def check_feedback(settings) -> None:
    """With --feedback-db: set up a new database, refuse a schema this version does not write (with the
    command to run) before any process starts. An unreachable database is not fatal: feedback answers 503."""
    if settings.feedback_url is None:
        return
    try:
        from seedlings.feedback.store import FeedbackUnavailable, Store
    except ModuleNotFoundError as exc:
        raise missing_extra("feedback", exc.name or "sqlalchemy") from exc
    try:
        Store(settings.feedback_url).close()
    except FeedbackUnavailable as exc:
        print(f"seedlings serve: warning: {exc}; POST /v1/feedback answers 503 until it is reachable")


def cmd_serve(args) -> int:
    settings = build_settings(args)
    try:
        import uvicorn
    except ImportError as exc:
        raise missing_extra("serve", "uvicorn") from exc
    # Before anything imports prometheus_client: it picks file-backed values at import when this is set.
    metrics_dir = _multiprocess_metrics(settings.workers, settings.metrics_port is not None)
    try:
        settings = settings.model_copy(update={"model_dir": check_model(settings)})
        check_feedback(settings)
        os.environ.update(settings.to_env())  # workers rebuild the same settings from these
        if settings.metrics_port is not None:
            _serve_metrics(settings.host, settings.metrics_port)
        _run_uvicorn(uvicorn, settings)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _run_uvicorn(uvicorn, settings) -> None:
    from seedlings.serving.logs import log_config
    from seedlings.serving.protocol import NoDelayH11Protocol

    # uvicorn re-raises SIGTERM after its graceful shutdown; handled here, the process exits 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    uvicorn.run("seedlings.serving.app:create_app_from_env", factory=True, host=settings.host,
                port=settings.port, workers=settings.workers,
                log_config=log_config(settings.json_logs, settings.log_level),
                timeout_graceful_shutdown=int(settings.request_timeout_s) + 5, server_header=False,
                http=NoDelayH11Protocol, timeout_keep_alive=settings.keepalive_timeout_s)


def _multiprocess_metrics(workers: int, separate_port: bool = False) -> str | None:
    """With several workers, or metrics on a port of their own, share Prometheus metrics through files:
    /metrics sums every worker, and the metrics server (a thread of this process) reads the same files."""
    if (workers <= 1 and not separate_port) or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    path = tempfile.mkdtemp(prefix="seedlings-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def _serve_metrics(host: str, port: int) -> None:
    """/metrics on a port of its own (a daemon thread), so an Ingress routing the main port never exposes it."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise SeedlingsError(f"--metrics-port {port}: cannot listen on {host}:{port} ({exc.strerror})") from exc
