"""access_code_unique: a session's access code is unique among bindable sessions, by an index

The code was drawn, then checked with a SELECT: one statement per session created, and two
sessions created at once could still draw the same code. The database now refuses the second
(payments.sessions draws again).

Revision ID: access_code_unique
Revises: totp_replay
Create Date: 2026-11-30 23:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "access_code_unique"
down_revision = "totp_replay"
branch_labels = None
depends_on = None

BINDABLE = sa.text("status IN ('pending', 'collecting')")


def upgrade() -> None:
    op.create_index(
        "uq_sessions_active_access_code",
        "sessions",
        ["access_code"],
        unique=True,
        postgresql_where=BINDABLE,
        sqlite_where=BINDABLE,
    )


def downgrade() -> None:
    op.drop_index("uq_sessions_active_access_code", table_name="sessions")
