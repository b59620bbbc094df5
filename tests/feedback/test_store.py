"""The feedback store on SQLite and on a real PostgreSQL server: schema, votes, photos, failures."""

from __future__ import annotations

import hashlib
import sqlite3
import threading

import pytest
import sqlalchemy as sa

from seedlings.errors import SeedlingsError
from seedlings.feedback.schema import images, votes
from seedlings.feedback.store import FeedbackUnavailable, SchemaError, Store, head_revision, safe_url


def test_empty_database_is_set_up_and_a_vote_is_committed(db_url):
    store = Store(db_url)
    assert store.revision() == head_revision()
    saved = store.add(b"photo-1", "PNG", (150, 150), "Charlock", predicted="Maize", confidence=0.61,
                      model_name="m", model_version="1", note="leaves", client=store.client_id("10.0.0.7"))
    assert saved.sha256 == hashlib.sha256(b"photo-1").hexdigest() and saved.stored
    # committed: a second, independent engine sees the row and the photo
    other = Store(db_url)
    (vote,) = other.votes()
    assert (vote.label, vote.predicted, vote.model_version) == ("Charlock", "Maize", "1")
    assert other.image(saved.sha256) == (b"photo-1", "PNG")


def test_same_photo_twice_is_one_image_and_two_votes(db_url):
    store = Store(db_url)
    first = store.add(b"same", "PNG", (8, 8), "Charlock")
    second = store.add(b"same", "PNG", (8, 8), "Maize")
    assert first.stored and not second.stored and first.sha256 == second.sha256 and first.id != second.id
    assert store.count(images) == 1 and store.count(votes) == 2


def test_concurrent_votes_for_one_photo_all_land(db_url):
    """Replicas (threads here, each its own pool connection) storing the same photo at once: one photo row,
    every vote, no error: INSERT … ON CONFLICT DO NOTHING, not read-then-write."""
    store = Store(db_url)
    errors, barrier = [], threading.Barrier(6)

    def vote(i):
        try:
            barrier.wait()
            store.add(b"popular", "PNG", (8, 8), "Charlock", note=str(i))
        except Exception as exc:  # collected: the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=vote, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert store.count(images) == 1 and store.count(votes) == 6


def test_client_addresses_are_hashed_with_the_databases_key(db_url):
    a, b = Store(db_url), Store(db_url)
    assert a.client_id("10.0.0.7") == b.client_id("10.0.0.7") != a.client_id("10.0.0.8")
    assert "10.0.0.7" not in a.client_id("10.0.0.7") and a.client_id(None) is None


def test_unknown_schema_is_refused_with_the_command_to_run(db_url):
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('9999')"))
    engine.dispose()
    with pytest.raises(SchemaError, match="newer than this seedlings knows"):
        Store(db_url)


def test_older_or_foreign_schema_needs_migrate(db_url):
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE feedback_votes (id INTEGER)"))
    engine.dispose()
    with pytest.raises(SchemaError, match="seedlings feedback migrate"):
        Store(db_url)


def test_migrate_then_downgrade_round_trip(db_url):
    from alembic import command

    from seedlings.feedback.store import alembic_config

    store = Store(db_url, check=False)
    assert store.migrate() == (None, head_revision())
    assert store.migrate() == (head_revision(), head_revision())  # idempotent
    with store.engine.begin() as conn:
        command.downgrade(alembic_config(conn), "base")
    assert store.revision() is None
    with store.engine.connect() as conn:
        assert "feedback_votes" not in sa.inspect(conn).get_table_names()


def test_postgres_down_is_unavailable_not_an_error(postgres):
    store = Store(postgres.new_database())
    store.add(b"before", "PNG", (8, 8), "Charlock")
    postgres.stop()
    try:
        with pytest.raises(FeedbackUnavailable, match="not available"):
            store.add(b"during", "PNG", (8, 8), "Charlock")
    finally:
        postgres.start()
    store.add(b"after", "PNG", (8, 8), "Charlock")  # the pool reconnects (pool_pre_ping)
    assert [v.sha256 for v in store.votes()] == [hashlib.sha256(x).hexdigest() for x in (b"before", b"after")]


def test_sqlite_locked_is_unavailable_and_stores_nothing(tmp_path):
    path = tmp_path / "feedback.db"
    store = Store(f"sqlite:///{path}")
    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        with pytest.raises(FeedbackUnavailable, match="locked"):
            store.add(b"x", "PNG", (8, 8), "Charlock")
    finally:
        holder.rollback()
        holder.close()
    assert store.count(votes) == 0 and store.count(images) == 0


@pytest.mark.parametrize("url, message", [
    ("not a url", "not a database URL"),
    ("mysql://u@h/db", "not supported"),
    ("sqlite:////no/such/folder/feedback.db", "does not exist"),
])
def test_bad_urls_say_how_a_url_looks(url, message):
    with pytest.raises(SeedlingsError, match=message) as err:
        Store(url)
    assert "sqlite:///" in str(err.value) and "postgresql+psycopg://" in str(err.value)


def test_passwords_are_not_shown():
    assert "hunter2" not in safe_url("postgresql+psycopg://me:hunter2@db/feedback")
