"""dashboard: settings audit log, dashboard users; settings renamed to the API's names

Revision ID: dashboard
Revises: 0002
Create Date: 2026-11-22 10:00:00.000000
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

import payments.store

revision = "dashboard"
down_revision = "0002"
branch_labels = None
depends_on = None

# Old setting name -> the name the API, the command line and the dashboard share.
RENAMED = {"merchant_name": "display_name", "require_zip": "require_postal_code"}
MAX_PAYMENT_ATTEMPTS = 3  # the API's range is 1-3; older rows allowed up to 10

_projects = sa.table("projects", sa.column("id", sa.String), sa.column("settings", sa.JSON))


def _rewrite_settings(renames: dict[str, str], *, clamp: bool) -> None:
    connection = op.get_bind()
    for project_id, settings in connection.execute(sa.select(_projects.c.id, _projects.c.settings)):
        values: dict[str, Any] = dict(settings or {})
        for old, new in renames.items():
            if old in values:
                values[new] = values.pop(old)
        if clamp and isinstance(values.get("max_payment_attempts"), int):
            values["max_payment_attempts"] = min(
                values["max_payment_attempts"], MAX_PAYMENT_ATTEMPTS
            )
        if values != settings:
            connection.execute(
                _projects.update().where(_projects.c.id == project_id).values(settings=values)
            )


def upgrade() -> None:
    op.create_table(
        "setting_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("at", payments.store.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=320), nullable=False),
        sa.Column("setting", sa.String(length=100), nullable=False),
        sa.Column("old", sa.JSON(), nullable=True),
        sa.Column("new", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("setting_changes", schema=None) as batch_op:
        batch_op.create_index("ix_setting_changes_project_at", ["project_id", "at"], unique=False)

    op.create_table(
        "dashboard_users",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("totp_secret_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", payments.store.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", payments.store.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
    )
    with op.batch_alter_table("dashboard_users", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dashboard_users_account_id"), ["account_id"], unique=False
        )

    _rewrite_settings(RENAMED, clamp=True)


def downgrade() -> None:
    _rewrite_settings({new: old for old, new in RENAMED.items()}, clamp=False)
    with op.batch_alter_table("dashboard_users", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dashboard_users_account_id"))
    op.drop_table("dashboard_users")
    with op.batch_alter_table("setting_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_setting_changes_project_at")
    op.drop_table("setting_changes")
