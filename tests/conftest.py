"""Shared fixtures: tiny synthetic seedling folders made by the tests (never copies of real data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.helpers import make_dataset


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own prepared-cache folder and no hub access."""
    monkeypatch.setenv("SEEDLINGS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def dataset(tmp_path) -> Path:
    return make_dataset(tmp_path / "seedlings")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A tiny finished run (2 epochs, 32 px), shared by tests that only read it."""
    from seedlings.training.fit import train

    base = tmp_path_factory.mktemp("trained")
    data = make_dataset(base / "data", per_class=14)
    os.environ.setdefault("SEEDLINGS_CACHE_DIR", str(base / "cache"))
    return train(data=str(data), out=str(base / "run"), epochs=2, image_size=32, batch_size=16,
                 threads=1, cache_dir=str(base / "cache"), progress=False)


@pytest.fixture(scope="session")
def exported_model(trained_run, tmp_path_factory) -> Path:
    from seedlings.export.onnx import export_run

    return export_run(trained_run, tmp_path_factory.mktemp("exported") / "model", log=lambda m: None)


@pytest.fixture(scope="session")
def second_run(trained_run, tmp_path_factory) -> Path:
    """Another member for ensembles: trained_run's data and split, another seed (so other weights)."""
    import json

    from seedlings.training.fit import train

    meta = json.loads((trained_run / "model.json").read_text())
    return train(data=meta["training"]["data"], out=str(tmp_path_factory.mktemp("member") / "run"), epochs=2,
                 image_size=32, batch_size=16, threads=1, seed=7, split_seed=0, progress=False)


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (tests/postgres.py): skipped without one, failed in CI."""
    from tests.postgres import PostgresServer, require_postgres

    server = PostgresServer(require_postgres())
    server.start()
    yield server
    server.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """An empty feedback database's URL, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'feedback.db'}"
    return request.getfixturevalue("postgres").new_database()
