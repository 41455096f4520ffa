"""newcomer: velocity events remember their mode, so test-mode counters can be reset

Revision ID: newcomer
Revises: dashboard
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "newcomer"
down_revision = "dashboard"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("velocity_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("environment", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("velocity_events", schema=None) as batch_op:
        batch_op.drop_column("environment")
