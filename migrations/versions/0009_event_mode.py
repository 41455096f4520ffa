"""event_mode: each webhook event knows its mode, so a live one is never sent over plain http

Revision ID: event_mode
Revises: breaker
Create Date: 2026-11-30 12:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "event_mode"
down_revision = "breaker"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("environment", sa.String(length=8), nullable=True))
    events = sa.table("webhook_events", sa.column("session_id"), sa.column("environment"))
    sessions = sa.table("sessions", sa.column("id"), sa.column("environment"))
    op.execute(
        events.update().values(
            environment=sa.select(sessions.c.environment)
            .where(sessions.c.id == events.c.session_id)
            .scalar_subquery()
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.drop_column("environment")
