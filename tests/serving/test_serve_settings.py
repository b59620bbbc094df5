"""Settings from SEEDLINGS_* variables and flags, and the app's answers before the model is ready."""

from __future__ import annotations

import argparse

import pytest

from seedlings.errors import SeedlingsError
from seedlings.serving.cli import add_parser, build_settings
from seedlings.serving.settings import Settings


def parse(*argv: str):
    parser = argparse.ArgumentParser()
    serve = add_parser(parser.add_subparsers(dest="command"))
    assert serve.prog.endswith(" serve")  # the parser it added, for COMMANDS to keep
    return parser.parse_args(["serve", *argv])


def test_environment_then_flags(monkeypatch):
    monkeypatch.setenv("SEEDLINGS_PORT", "9000")
    monkeypatch.setenv("SEEDLINGS_MAX_BATCH", "4")
    monkeypatch.setenv("SEEDLINGS_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("SEEDLINGS_API_TOKEN", "")
    monkeypatch.setenv("SEEDLINGS_IDLE_DISPATCH", "true")
    args = parse("--port", "9001", "--no-batching", "--tta", "--no-idle-dispatch")
    s = build_settings(args)
    assert (s.port, s.max_batch, s.batching, s.tta, s.idle_dispatch) == (9001, 4, False, True, False)
    assert s.cors_origin_list == ["https://a.example", "https://b.example"]
    assert s.token is None and s.max_body_bytes == 10 * 1024 * 1024


def test_settings_round_trip_through_the_environment(monkeypatch):
    """--workers N processes rebuild their settings from the variables the parent exported."""
    s = Settings(port=1234, precision="int8", api_token="t", json_logs=True, max_wait_ms=2.5, threads=3,
                 idle_dispatch=False, decode_threads=0, upload_timeout_s=12.5)
    for key, value in s.to_env().items():
        monkeypatch.setenv(key, value)
    assert Settings() == s


def test_bad_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("SEEDLINGS_MAX_BATCH", "lots")
    args = parse()
    with pytest.raises(SeedlingsError, match="max_batch"):
        build_settings(args)


def test_threads_are_shared_between_workers():
    assert Settings(workers=2, threads=None).inference_threads() >= 1
    assert Settings(workers=1, threads=5).inference_threads() == 5
    assert Settings(workers=64, decode_threads=None).decoding_threads() == 1
    assert Settings(decode_threads=0).decoding_threads() == 0  # 0: Starlette's shared thread pool


def test_not_ready_before_the_model_is_loaded(model_dir):
    """Without the lifespan (model not loaded) every model endpoint says 503 not_ready, health says alive."""
    from starlette.testclient import TestClient

    from seedlings.serving.app import create_app

    client = TestClient(create_app(Settings(model_dir=str(model_dir))))  # no `with`: lifespan not run
    assert client.get("/healthz").status_code == 200
    assert client.get("/v2/health/live").json() == {"live": True}
    for method, path in (("GET", "/readyz"), ("GET", "/v1/model"), ("POST", "/v1/predict"),
                         ("GET", "/v2/health/ready"), ("GET", "/v2/models/x")):
        r = client.request(method, path)
        assert r.status_code == 503, (path, r.text)
    assert client.get("/readyz").json()["error"]["code"] == "not_ready"
