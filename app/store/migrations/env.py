"""Alembic environment: migrations run on the connection the service (or ``vqa store upgrade``) hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from app.store.schema import Base

connection: Connection | None = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through app.store.database.migrate(), which passes a connection")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
