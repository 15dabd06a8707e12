"""failure-cause index: message_causes, filled for the failed messages already stored

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 01:40:00

Written by hand. Grouping failures used to normalise every failed message's reply in
Python at query time; this table holds that result, written with each failure. The
backfill computes it for what is already dead or scheduled, in batches.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mailconsole.engine.store.cause_index import FAILED, cause_rows_of

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BATCH = 5000

_messages = sa.table(
    "messages",
    sa.column("id", sa.String),
    sa.column("status", sa.String),
    sa.column("last_code", sa.Integer),
    sa.column("last_enhanced", sa.String),
    sa.column("last_reply", sa.Text),
    sa.column("last_error", sa.Text),
    sa.column("rcpt_state", sa.JSON),
)


def upgrade() -> None:
    causes = op.create_table(
        "message_causes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("message_id", sa.String(length=40), nullable=False),
        sa.Column("key", sa.String(length=12), nullable=False),
        sa.Column("code", sa.Integer(), nullable=True),
        sa.Column("enhanced", sa.String(length=16), nullable=True),
        sa.Column("reply", sa.String(length=200), nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_causes_key", "message_causes", ["key"], unique=False)
    op.create_index("ix_causes_message", "message_causes", ["message_id"], unique=False)
    _backfill(causes)


def _backfill(causes: sa.Table) -> None:
    conn = op.get_bind()
    after = ""
    while True:
        rows = conn.execute(
            sa.select(_messages)
            .where(_messages.c.status.in_([str(s) for s in FAILED]))
            .where(_messages.c.id > after)
            .order_by(_messages.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        after = rows[-1].id
        batch = [cause for r in rows for cause in cause_rows_of(r._mapping)]
        if batch:
            conn.execute(sa.insert(causes), batch)


def downgrade() -> None:
    op.drop_index("ix_causes_message", table_name="message_causes")
    op.drop_index("ix_causes_key", table_name="message_causes")
    op.drop_table("message_causes")
