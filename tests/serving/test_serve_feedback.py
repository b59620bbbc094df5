"""POST /v1/feedback on a real server: stored on SQLite and on a real PostgreSQL, refused cleanly, and never in
the way of predictions (the database down: feedback 503, predictions 200, /readyz ready)."""

from __future__ import annotations

import hashlib
import sqlite3
import struct
import time
import zlib

import httpx
import pytest
from tests.serving.conftest import png_bytes

from seedlings.feedback.schema import images, votes
from seedlings.feedback.store import Store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('feedback') / 'feedback.db'}"


@pytest.fixture(scope="module")
def fb_server(start_server, sqlite_url):
    return start_server("--feedback-db", sqlite_url)


def send(url: str, photo: bytes | None = None, token: str | None = None, **fields) -> httpx.Response:
    files = {"file": ("seedling.png", png_bytes() if photo is None else photo, "image/png")}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(url + "/v1/feedback", files=files, data=fields, headers=headers, timeout=30)


def classes_of(server) -> list[str]:
    return httpx.get(server.url + "/v1/model", timeout=10).json()["classes"]


def test_a_correction_is_stored_with_what_the_model_said(fb_server, sqlite_url):
    species, other = classes_of(fb_server)[:2]
    photo = png_bytes()
    answer = send(fb_server.url, photo, species=species, predicted=other, confidence="0.42", model_version="v7",
                  note="leaves look serrated")
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["sha256"] == hashlib.sha256(photo).hexdigest() and isinstance(body["id"], int)
    again = send(fb_server.url, photo, species=species)
    assert again.status_code == 201 and again.json()["sha256"] == body["sha256"]
    assert [body["stored"], again.json()["stored"]] == [True, False]  # one photo, two votes
    store = Store(sqlite_url)
    row = next(v for v in store.query(votes.select()) if v.id == body["id"])
    model = httpx.get(fb_server.url + "/v1/model", timeout=10).json()
    assert (row.label, row.predicted, row.confidence, row.model_version, row.note) == \
        (species, other, 0.42, "v7", "leaves look serrated")
    assert row.model_name == model["name"] and model["serving"]["feedback"] is True
    assert row.client and "127.0.0.1" not in row.client  # a keyed hash, not the address
    assert store.image(body["sha256"])[0] == photo


def test_new_species_and_not_a_seedling_are_stored_as_such(fb_server, sqlite_url):
    a = send(fb_server.url, png_bytes(fmt="PNG", optimize=True), species="other: Common  Poppy")
    b = send(fb_server.url, png_bytes(fmt="JPEG"), species="NOT-A-SEEDLING")
    assert a.status_code == b.status_code == 201, a.text + b.text
    labels = {v.id: v.label for v in Store(sqlite_url).query(votes.select())}
    assert labels[a.json()["id"]] == "other:Common Poppy" and labels[b.json()["id"]] == "not-a-seedling"


def _huge_png() -> bytes:
    """A 67-byte PNG whose header says 60,000 × 60,000 pixels (a decompression bomb's first step)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


BAD = [
    ("unknown species", {"species": "Dandelion"}, None, 422, "not a species this model knows"),
    ("path in a new name", {"species": "other:../../etc/passwd"}, None, 422, "not a usable species name"),
    ("name over 80", {"species": "other:" + "a" * 81}, None, 422, "at most 80"),
    ("empty species", {"species": "  "}, None, 422, "empty"),
    ("no species", {}, None, 422, "no field 'species'"),
    ("text, not a photo", {"species": "other:x"}, b"just some text", 422, "not an image"),
    ("empty photo", {"species": "other:x"}, b"", 422, "empty"),
    ("decompression bomb", {"species": "other:x"}, _huge_png(), 422, "pixels"),
    ("confidence over 1", {"species": "other:x", "confidence": "1.5"}, None, 422, "from 0 to 1"),
    ("confidence not a number", {"species": "other:x", "confidence": "nan"}, None, 422, "from 0 to 1"),
    ("long note", {"species": "other:x", "note": "n" * 1001}, None, 422, "at most 1000"),
    ("control characters", {"species": "other:x", "predicted": "a\x00b"}, None, 422, "control characters"),
    ("unknown field", {"species": "other:x", "label": "x"}, None, 422, "unknown form field"),
]


@pytest.mark.parametrize("what, fields, photo, status, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_and_stores_nothing(fb_server, sqlite_url, what, fields, photo, status, message):
    store = Store(sqlite_url)
    before = (store.count(votes), store.count(images))
    answer = send(fb_server.url, photo, **fields)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]["message"], answer.text
    assert (store.count(votes), store.count(images)) == before


def test_missing_photo_oversized_body_and_wrong_type(fb_server, sqlite_url):
    store = Store(sqlite_url)
    before = store.count(votes)
    url = fb_server.url + "/v1/feedback"
    no_file = httpx.post(url, data={"species": "other:x"}, files={"dummy": ("", b"")}, timeout=30)
    assert no_file.status_code == 422 and "unknown form field" in no_file.text  # a form without 'file'
    only_text = httpx.post(url, files={"species": (None, "other:x")}, timeout=30)
    assert only_text.status_code == 400 and "no field 'file'" in only_text.text
    as_json = httpx.post(url, json={"species": "other:x"}, timeout=30)
    assert as_json.status_code == 415
    huge = httpx.post(url, files={"file": ("a.png", b"\0" * (11 * 1024 * 1024))}, data={"species": "other:x"},
                      timeout=60)
    assert huge.status_code == 413
    assert store.count(votes) == before


def test_feedback_is_off_without_a_database(server):
    answer = send(server.url, species="other:x")
    assert answer.status_code == 404 and "--feedback-db" in answer.json()["error"]["message"]
    assert httpx.get(server.url + "/v1/model", timeout=10).json()["serving"]["feedback"] is False


def test_the_token_protects_feedback_and_clients_are_rate_limited(start_server, tmp_path):
    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    srv = start_server("--feedback-db", url, "--feedback-per-minute", "3", env={"SEEDLINGS_API_TOKEN": "s3cret"})
    assert send(srv.url, species="other:x").status_code == 401
    answers = [send(srv.url, token="s3cret", species="other:x") for _ in range(4)]
    assert [a.status_code for a in answers] == [201, 201, 201, 429]  # the token is checked first: a 401 is free
    limited = answers[-1]
    assert int(limited.headers["Retry-After"]) >= 1 and "retry in" in limited.json()["error"]["message"]
    assert Store(url).count(votes) == sum(a.status_code == 201 for a in answers)


def test_postgres_down_feedback_503_predictions_go_on(start_server, postgres):
    db = postgres.new_database()
    srv = start_server("--feedback-db", db)
    assert send(srv.url, species="other:x").status_code == 201
    postgres.stop()
    try:
        down = send(srv.url, png_bytes(fmt="JPEG"), species="other:y")
        assert down.status_code == 503 and down.headers["Retry-After"] == "5", down.text
        assert "nothing was stored" in down.json()["error"]["message"]
        predicted = httpx.post(srv.url + "/v1/predict", files={"file": ("a.png", png_bytes(), "image/png")},
                               timeout=30)
        assert predicted.status_code == 200
        assert httpx.get(srv.url + "/readyz", timeout=10).status_code == 200
    finally:
        postgres.start()
    assert send(srv.url, png_bytes(fmt="JPEG"), species="other:y").status_code == 201
    assert [v.label for v in Store(db).votes()] == ["other:x", "other:y"]


def test_sqlite_locked_is_503_and_stores_nothing(fb_server, sqlite_url):
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    holder.execute("BEGIN EXCLUSIVE")
    try:
        answer = send(fb_server.url, png_bytes(fmt="BMP"), species="other:locked")
    finally:
        holder.rollback()
        holder.close()
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    assert "other:locked" not in {v.label for v in Store(sqlite_url).votes()}


def test_serve_refuses_a_schema_it_does_not_know(tmp_path, model_dir):
    import sqlalchemy as sa
    from tests.helpers import seedlings_cli

    path = tmp_path / "feedback.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE feedback_votes (id INTEGER)"))
    engine.dispose()
    proc = seedlings_cli("serve", "--model", model_dir, "--port", "0", "--feedback-db", f"sqlite:///{path}",
                         timeout=120)
    assert proc.returncode == 1
    assert "seedlings feedback migrate --db" in proc.stderr, proc.stderr


def _unique_photos(n: int) -> list[bytes]:
    from PIL import Image

    base = Image.new("RGB", (32, 32), (60, 120, 40))
    photos = []
    for i in range(n):
        img = base.copy()
        img.putpixel((i % 32, (i // 32) % 32), (i % 256, (i // 256) % 256, 200))
        photos.append(png_bytes(img))
    return photos


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_no_acknowledged_feedback_is_lost_when_the_service_is_killed(request, start_server, tmp_path, backend):
    """16 clients send feedback; the service gets SIGKILL mid-stream; every 201 the clients got is in the
    database, photo included (a 201 is sent only after the commit)."""
    import threading

    url = f"sqlite:///{tmp_path / 'feedback.db'}" if backend == "sqlite" else \
        request.getfixturevalue("postgres").new_database()
    srv = start_server("--feedback-db", url, "--feedback-per-minute", "100000")
    photos = _unique_photos(16 * 120)
    acknowledged, lock, stop = {}, threading.Lock(), threading.Event()

    def client(k: int) -> None:
        with httpx.Client(base_url=srv.url, timeout=10) as http:
            for photo in photos[k::16]:
                if stop.is_set():
                    return
                try:
                    r = http.post("/v1/feedback", files={"file": ("p.png", photo, "image/png")},
                                  data={"species": "other:Kill Test"})
                except httpx.TransportError:
                    return  # the service is gone: this one was never acknowledged
                if r.status_code == 201:
                    with lock:
                        acknowledged[r.json()["id"]] = r.json()["sha256"]

    threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    srv.proc.kill()  # SIGKILL: no shutdown, no flush
    srv.proc.wait()
    stop.set()
    for t in threads:
        t.join()
    assert len(acknowledged) >= 100
    store = Store(url)
    stored = {v.id: v.sha256 for v in store.votes()}
    missing = {i: s for i, s in acknowledged.items() if stored.get(i) != s}
    assert not missing, f"{len(missing)} acknowledged vote(s) lost"
    for sha in set(acknowledged.values()):
        data, _ = store.image(sha)
        assert hashlib.sha256(data).hexdigest() == sha
