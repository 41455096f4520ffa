"""confirmation: the payer's confirmation code on a successful session

Revision ID: confirmation
Revises: refunds
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "confirmation"
down_revision = "refunds"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("confirmation_code", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("confirmation_code")
