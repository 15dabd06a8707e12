"""Alembic environment: always handed a live connection by ``Database.upgrade``."""

from __future__ import annotations

from alembic import context

from mailconsole.engine.store.models import Base

connection = context.config.attributes.get("connection")
if (
    connection is None
):  # pragma: no cover - only reached when alembic's CLI is used directly
    raise SystemExit("run migrations with `mailconsole db upgrade`")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
