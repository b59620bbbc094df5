"""The feedback database's tables (SQLAlchemy Core: one ``MetaData`` that Alembic's migrations follow).

Photos live in the database itself, keyed by their sha256, rather than in a folder beside it: N service
replicas then share one store with nothing else to mount, a row and its photo commit together (a ``201``
never points at a missing file), and backups are one ``pg_dump``. The uploads are bounded by the service's
body limit (10 MiB by default; seedling photos are some 40 KB to a few MB), well within what PostgreSQL's
``bytea`` and SQLite's BLOB hold.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

# Names for constraints, so that migrations name them the same on every database.
metadata = MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s", "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s", "pk": "pk_%(table_name)s",
})

LABEL_MAX = 80  # characters of a label, a model name or version

images = Table(
    "feedback_images", metadata,
    Column("sha256", String(64), primary_key=True),
    Column("data", LargeBinary, nullable=False),
    Column("format", String(16), nullable=False),  # PNG, JPEG… as decoded: the export's file suffix
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("size", Integer, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
)

votes = Table(
    "feedback_votes", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sha256", String(64), ForeignKey("feedback_images.sha256"), nullable=False, index=True),
    Column("label", String(LABEL_MAX + 6), nullable=False),  # a class, "other:<name>" or "not-a-seedling"
    Column("predicted", String(LABEL_MAX), nullable=True),
    Column("confidence", Float, nullable=True),
    Column("model_name", String(LABEL_MAX), nullable=True),
    Column("model_version", String(LABEL_MAX), nullable=True),
    Column("note", Text, nullable=True),
    Column("client", String(64), nullable=True),  # a keyed hash of the address, unless configured otherwise
    Column("created", DateTime(timezone=True), nullable=False),
    Index("ix_feedback_votes_created", "created"),
)

# One row: the key that hashes client addresses, shared by every replica writing to this database.
meta = Table(
    "feedback_meta", metadata,
    Column("name", String(32), primary_key=True),
    Column("value", String(128), nullable=False),
)
