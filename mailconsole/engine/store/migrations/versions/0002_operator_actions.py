"""operator actions: replay restarts the max age; indexes for lists and stats

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 20:30:00

Written by hand. ``batch_alter_table`` keeps it working on SQLite (where
``render_as_batch`` recreates tables when it must; adding a nullable column and
indexes needs no copy) as well as PostgreSQL and MariaDB, where batch mode issues
plain ``ALTER TABLE`` statements.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mailconsole.engine.store.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        # Nullable, no default: existing rows keep counting from created_at.
        batch_op.add_column(sa.Column("age_from", UTCDateTime(), nullable=True))
        batch_op.create_index(
            "ix_messages_status_created", ["status", "created_at"], unique=False
        )
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_attempts_started", ["started_at", "outcome"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_attempts_started")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_status_created")
        batch_op.drop_column("age_from")
