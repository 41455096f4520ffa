"""integrations: per-project agent-platform tokens and the Retell signing key

Revision ID: integrations
Revises: confirmation
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import payments.store

revision = "integrations"
down_revision = "confirmation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "project_integrations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("environment", sa.String(length=8), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("retell_key_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("updated_at", payments.store.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "environment"),
        sa.UniqueConstraint("token_hash"),
    )


def downgrade() -> None:
    op.drop_table("project_integrations")
