"""The first schema: photos keyed by sha256, votes, and the key that hashes client addresses.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback_images",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name="pk_feedback_images"),
    )
    op.create_table(
        "feedback_votes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("label", sa.String(86), nullable=False),
        sa.Column("predicted", sa.String(80), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("model_name", sa.String(80), nullable=True),
        sa.Column("model_version", sa.String(80), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("client", sa.String(64), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["sha256"], ["feedback_images.sha256"],
                                name="fk_feedback_votes_sha256_feedback_images"),
        sa.PrimaryKeyConstraint("id", name="pk_feedback_votes"),
    )
    op.create_index("ix_feedback_votes_sha256", "feedback_votes", ["sha256"])
    op.create_index("ix_feedback_votes_created", "feedback_votes", ["created"])
    meta = op.create_table(
        "feedback_meta",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("value", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_feedback_meta"),
    )
    op.bulk_insert(meta, [{"name": "client_key", "value": secrets.token_hex(32)}])


def downgrade() -> None:
    op.drop_table("feedback_meta")
    op.drop_index("ix_feedback_votes_created", "feedback_votes")
    op.drop_index("ix_feedback_votes_sha256", "feedback_votes")
    op.drop_table("feedback_votes")
    op.drop_table("feedback_images")
