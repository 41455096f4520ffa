"""access_code_unique: a session's access code is unique among bindable sessions, by an index

The code was drawn, then checked with a SELECT: one statement per session created, and two
sessions created at once could still draw the same code. The database now refuses the second
(payments.sessions draws again).

Sessions that already share a code would stop the index from being built, so each such group
keeps its code on one session (the one a call is on, else the oldest: the likeliest to be keyed)
and the others draw fresh codes (the API shows each session's code). Their callers still bind by
caller ID or SIP URI; one who keys the shared code reaches the session that kept it, where before
the lookup took either.

Revision ID: access_code_unique
Revises: totp_replay
Create Date: 2026-11-30 23:10:00.000000
"""

from __future__ import annotations

import logging
import secrets

import sqlalchemy as sa
from alembic import context, op

revision = "access_code_unique"
down_revision = "totp_replay"
branch_labels = None
depends_on = None

BINDABLE = sa.text("status IN ('pending', 'collecting')")

log = logging.getLogger("alembic.runtime.migration")  # where Alembic reports each step


def _redraw_shared_codes(connection: sa.Connection) -> int:
    """Give every bindable session but one of each group sharing a code a code of its own;
    returns how many were given one."""
    in_use = set(
        connection.execute(
            sa.text(
                "SELECT access_code FROM sessions WHERE access_code IS NOT NULL "
                "AND status IN ('pending', 'collecting')"
            )
        ).scalars()
    )
    shared = connection.execute(
        sa.text(
            "SELECT id, access_code FROM sessions WHERE status IN ('pending', 'collecting') "
            "AND access_code IN (SELECT access_code FROM sessions "
            "WHERE status IN ('pending', 'collecting') GROUP BY access_code HAVING COUNT(*) > 1) "
            "ORDER BY access_code, call_sid IS NULL, created_at, id"
        )
    ).all()
    kept: set[str] = set()
    redrawn = 0
    for session_id, code in shared:
        if code not in kept:
            kept.add(code)
            continue
        fresh = code
        while fresh in in_use:
            fresh = f"{secrets.randbelow(1_000_000):06d}"  # as payments.sessions draws them
        in_use.add(fresh)
        connection.execute(
            sa.text("UPDATE sessions SET access_code = :code WHERE id = :id"),
            {"code": fresh, "id": session_id},
        )
        redrawn += 1
    return redrawn


def upgrade() -> None:
    redrawn = 0 if context.is_offline_mode() else _redraw_shared_codes(op.get_bind())
    if redrawn:
        log.warning("%d open sessions shared an access code: each was given a new one", redrawn)
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
