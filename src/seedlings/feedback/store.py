"""The feedback store: SQLite for one machine, PostgreSQL for N replicas; the schema belongs to Alembic.

``Store(url)`` checks the schema before anything is written: a new, empty database is set up at once
(``upgrade head``), one at an older revision is refused with the command that migrates it, one at a
revision this version does not know (a newer seedlings migrated it) is refused too. Every write is one
transaction: a vote and its photo are committed together, or not at all.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError, InterfaceError, NoSuchModuleError, OperationalError

from seedlings.errors import SeedlingsError
from seedlings.feedback.schema import images, meta, votes

MIGRATIONS = Path(__file__).parent / "migrations"
URL_HELP = "use sqlite:///path/feedback.db (one machine) or postgresql+psycopg://user:password@host/database"
# Errors that say "the database cannot be reached, or is busy": 503 and a retry, never a lost vote.
UNAVAILABLE = (OperationalError, InterfaceError)
SQLITE_BUSY_S = 2.0  # a locked SQLite file: wait this long, then 503 (the client retries)
WRITE_WAIT_S = 10.0  # this process's writers queued for SQLite's one write slot: then 503
CONNECT_TIMEOUT_S = 3  # an unreachable PostgreSQL: give up after this, then 503


class FeedbackUnavailable(SeedlingsError):
    """The database cannot be reached or is locked; retrying later can help (the service answers 503)."""


class SchemaError(SeedlingsError):
    """The database's schema is not the one this version writes; ``migrate`` (or a newer seedlings) fixes it."""


@dataclass(frozen=True)
class Stored:
    id: int
    sha256: str
    stored: bool  # False: the photo was there already (this is one more vote for it)


def engine_for(url: str) -> sa.Engine:
    """An engine for ``url`` with short timeouts, or an error that says how a URL looks."""
    try:
        parsed = sa.make_url(url)
    except ArgumentError as exc:
        raise SeedlingsError(f"not a database URL: {url!r}; {URL_HELP}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = parsed.database
        if path and path != ":memory:" and not Path(path).parent.is_dir():
            raise SeedlingsError(f"{path}: its folder {Path(path).parent} does not exist; create it or {URL_HELP}")
        args = {"connect_args": {"timeout": SQLITE_BUSY_S}}
    elif backend == "postgresql":
        args = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True,
                "pool_size": 4, "max_overflow": 4, "pool_timeout": CONNECT_TIMEOUT_S}
    else:
        raise SeedlingsError(f"database {backend!r} is not supported ({safe_url(url)}); {URL_HELP}")
    try:
        engine = sa.create_engine(parsed, **args)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise SeedlingsError(f"no driver for {safe_url(url)} ({exc}); pip install 'seedlings[feedback]' and "
                             "write PostgreSQL URLs as postgresql+psycopg://…") from exc
    if backend == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """WAL: readers never wait for the writer, and a commit is one append + fsync of the log instead of the
    rollback journal's several; synchronous=FULL keeps every commit durable (a 201 survives a power cut)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a URL)"


def alembic_config(connection):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(None)).get_current_head()


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {s.revision for s in ScriptDirectory.from_config(alembic_config(None)).walk_revisions()}


class Store:
    """One feedback database. Thread-safe (SQLAlchemy's pool); the service calls it from worker threads."""

    def __init__(self, url: str, create: bool = True, check: bool = True):
        """``create``: set up a new, empty database; ``check=False`` skips the schema check (for migrating)."""
        self.url = url
        self.engine = engine_for(url)
        self._client_key: bytes | None = None
        # SQLite has one writer at a time: threads of this process take turns here instead of polling the
        # file lock (its busy handler sleeps in growing steps); other processes still meet the busy timeout.
        self._write_lock = threading.Lock() if self.engine.dialect.name == "sqlite" else None
        if check:
            self.check(create)

    def __repr__(self) -> str:
        return f"Store({safe_url(self.url)})"

    def revision(self) -> str | None:
        """The database's Alembic revision; None for a database seedlings has never set up."""
        from alembic.runtime.migration import MigrationContext

        with self._connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def check(self, create: bool = True) -> None:
        """Make sure the schema is the one this version writes (setting up an empty database if ``create``)."""
        current, head = self.revision(), head_revision()
        if current == head:
            return
        if current is None and create and not self._has_tables():
            self.migrate()
            return
        where = safe_url(self.url)
        if current is not None and current not in known_revisions():
            raise SchemaError(f"{where}: schema revision {current} is newer than this seedlings knows ({head}); "
                              "upgrade seedlings, or point it at another database")
        raise SchemaError(f"{where}: the feedback schema is at {current or 'nothing (tables of another program?)'}, "
                          f"this seedlings writes {head}: run `seedlings feedback migrate --db URL` first")

    def migrate(self) -> tuple[str | None, str]:
        """Bring the schema to head (Alembic's ``upgrade head``); returns (before, after)."""
        from alembic import command

        before = self.revision()
        with self._begin() as conn:
            if conn.dialect.name == "postgresql":  # replicas starting together: one migrates, the others wait
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(7514021)"))
            from alembic.runtime.migration import MigrationContext

            if MigrationContext.configure(conn).get_current_revision() != head_revision():
                command.upgrade(alembic_config(conn), "head")
        self._client_key = None
        return before, self.revision()

    def _has_tables(self) -> bool:
        with self._connect() as conn:
            return bool(set(sa.inspect(conn).get_table_names()) & {images.name, votes.name, meta.name})

    def add(self, data: bytes, image_format: str, size: tuple[int, int], label: str, *, predicted: str | None = None,
            confidence: float | None = None, model_name: str | None = None, model_version: str | None = None,
            note: str | None = None, client: str | None = None) -> Stored:
        """Store one vote for the photo ``data`` (and the photo, unless it is stored already); committed on return."""
        sha = hashlib.sha256(data).hexdigest()
        now = datetime.now(timezone.utc)
        with self._writing(), self._begin() as conn:
            new = conn.execute(_insert_ignore(conn, images, "sha256").values(
                sha256=sha, data=data, format=image_format, width=size[0], height=size[1], size=len(data),
                created=now).returning(images.c.sha256)).first() is not None
            row = conn.execute(votes.insert().values(
                sha256=sha, label=label, predicted=predicted, confidence=confidence, model_name=model_name,
                model_version=model_version, note=note, client=client, created=now))
            return Stored(int(row.inserted_primary_key[0]), sha, new)

    @contextmanager
    def _writing(self):
        if self._write_lock is None:
            yield
            return
        if not self._write_lock.acquire(timeout=WRITE_WAIT_S):
            raise FeedbackUnavailable(f"the feedback database {safe_url(self.url)} is busy with other writes; "
                                      "try again shortly")
        try:
            yield
        finally:
            self._write_lock.release()

    def client_id(self, address: str | None) -> str | None:
        """A keyed hash of a client's address: the same client is recognisable across votes and replicas
        (the key is in the database), the address itself is not stored."""
        if not address:
            return None
        if self._client_key is None:
            with self._connect() as conn:
                value = conn.execute(sa.select(meta.c.value).where(meta.c.name == "client_key")).scalar_one()
            self._client_key = bytes.fromhex(value)
        return hmac.new(self._client_key, address.encode(), hashlib.sha256).hexdigest()[:32]

    def votes(self, since: datetime | None = None) -> list[sa.Row]:
        """Every vote (without photos), oldest first; only those at or after ``since`` when given."""
        query = sa.select(votes.c.id, votes.c.sha256, votes.c.label, votes.c.predicted, votes.c.confidence,
                          votes.c.model_name, votes.c.model_version, votes.c.created).order_by(votes.c.id)
        if since is not None:  # stored in UTC (SQLite keeps no offset: compare in UTC)
            query = query.where(votes.c.created >= since.astimezone(timezone.utc))
        with self._connect() as conn:
            return list(conn.execute(query))

    def image(self, sha256: str) -> tuple[bytes, str]:
        """(bytes, format) of a stored photo."""
        with self._connect() as conn:
            row = conn.execute(sa.select(images.c.data, images.c.format).where(images.c.sha256 == sha256)).one()
        return bytes(row.data), row.format

    def count(self, table: sa.Table) -> int:
        with self._connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())

    def query(self, statement) -> list[sa.Row]:
        with self._connect() as conn:
            return list(conn.execute(statement))

    def close(self) -> None:
        self.engine.dispose()

    def _connect(self):
        return _Guard(self, self.engine.connect)

    def _begin(self):
        return _Guard(self, self.engine.begin)


class _Guard:
    """A connection (or transaction) whose "cannot reach / locked" errors become FeedbackUnavailable."""

    def __init__(self, store: Store, opener):
        self.store, self.opener, self.ctx = store, opener, None

    def __enter__(self):
        try:
            self.ctx = self.opener()
            return self.ctx.__enter__()
        except UNAVAILABLE as exc:
            raise unavailable(self.store, exc) from exc

    def __exit__(self, typ, value, tb):
        try:
            suppressed = self.ctx.__exit__(typ, value, tb)
        except UNAVAILABLE as exc:  # the commit itself failed: nothing was stored
            raise unavailable(self.store, exc) from exc
        if isinstance(value, UNAVAILABLE):
            raise unavailable(self.store, value) from value
        return suppressed


def unavailable(store: Store, exc: Exception) -> FeedbackUnavailable:
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
    return FeedbackUnavailable(f"the feedback database {safe_url(store.url)} is not available ({reason}); "
                               "try again shortly")


def _insert_ignore(conn, table: sa.Table, key: str):
    """INSERT … ON CONFLICT DO NOTHING in the connection's dialect: two replicas storing the same photo at
    once both succeed, one row."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing(index_elements=[key])
