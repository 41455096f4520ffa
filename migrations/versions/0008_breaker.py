"""breaker: webhook events about a project itself (no session), e.g. widget-charges-paused

Revision ID: breaker
Revises: integrations
Create Date: 2026-11-30 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "breaker"
down_revision = "integrations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.alter_column("session_id", existing_type=sa.String(length=36), nullable=True)


def downgrade() -> None:
    # The older schema cannot hold project events: they go, with their delivery records.
    project_events = sa.select(sa.column("id")).select_from(sa.table("webhook_events"))
    project_events = project_events.where(sa.column("session_id").is_(None))
    op.execute(
        sa.table("webhook_deliveries", sa.column("event_id"))
        .delete()
        .where(sa.column("event_id").in_(project_events))
    )
    op.execute(
        sa.table("webhook_events", sa.column("session_id"))
        .delete()
        .where(sa.column("session_id").is_(None))
    )
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.alter_column("session_id", existing_type=sa.String(length=36), nullable=False)
