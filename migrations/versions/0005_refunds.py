"""refunds: refunds, captures and voids after the payment; what the session captured and gave back

Revision ID: refunds
Revises: newcomer
Create Date: 2026-11-30 11:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import payments.store

revision = "refunds"
down_revision = "newcomer"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "money_operations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=80), nullable=False),
        sa.Column("public_id", sa.String(length=40), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("reference", sa.String(length=80), nullable=False),
        sa.Column("gateway_id", sa.String(length=80), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.String(length=500), nullable=True),
        sa.Column("created_at", payments.store.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", payments.store.UTCDateTime(timezone=True), nullable=True),
        sa.Column("reconcile_checks", sa.Integer(), nullable=False),
        sa.Column("next_check_at", payments.store.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
        sa.UniqueConstraint("public_id"),
        sa.UniqueConstraint("session_id", "kind", "number"),
    )
    with op.batch_alter_table("money_operations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_money_operations_next_check_at"), ["next_check_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_money_operations_session_id"), ["session_id"], unique=False
        )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("captured_cents", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("captured_at", payments.store.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("voided_at", payments.store.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("refunded_cents", sa.Integer(), server_default="0", nullable=False)
        )
    # Charges taken before this revision were captured in full when they completed.
    op.execute(
        "UPDATE sessions SET captured_cents = amount_cents, captured_at = completed_at "
        "WHERE status = 'payment-success' AND mode = 'charge'"
    )


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("refunded_cents")
        batch_op.drop_column("voided_at")
        batch_op.drop_column("captured_at")
        batch_op.drop_column("captured_cents")
    with op.batch_alter_table("money_operations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_money_operations_session_id"))
        batch_op.drop_index(batch_op.f("ix_money_operations_next_check_at"))
    op.drop_table("money_operations")
