"""How long to wait before asking a gateway again about one attempt (reconciliation, reversals)."""

from __future__ import annotations

from datetime import timedelta

FIRST_PAUSE = timedelta(seconds=30)
MAX_PAUSE = timedelta(hours=1)


def next_pause(checks: int) -> timedelta:
    """30 s, 1 min, 2 min, ... at most an hour between look-ups of one attempt."""
    return min(FIRST_PAUSE * int(2**checks), MAX_PAUSE)
