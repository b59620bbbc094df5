"""Alembic's migration environment: the connection comes from seedlings.feedback.store (config attribute
``connection``), never from an alembic.ini, so `seedlings feedback migrate --db URL` is the one entry point."""

from alembic import context

from seedlings.feedback.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
