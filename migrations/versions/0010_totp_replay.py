"""totp_replay: a dashboard user's last accepted TOTP step, so each code is good once

Revision ID: totp_replay
Revises: event_mode
Create Date: 2026-11-30 14:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "totp_replay"
down_revision = "event_mode"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dashboard_users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("totp_last_step", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dashboard_users", schema=None) as batch_op:
        batch_op.drop_column("totp_last_step")
