"""A process keeps its PostgreSQL connections: a burst waits for them instead of opening more,
and a process can open them all ahead (`Database.warm`, at start-up) so a burst opens none."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import event, text

from payments.store import Database
from tests.conftest import free_port

POOL = 3
BURST = 12  # transactions at once, four times the pool


def burst(db: Database) -> list[int]:
    """BURST short transactions at once."""

    def transaction(_: int) -> int:
        with db.transaction() as tx:
            return int(tx.scalar(text("SELECT 1 FROM pg_sleep(0.05)")) or 0)

    with ThreadPoolExecutor(BURST) as pool:
        return list(pool.map(transaction, range(BURST)))


def test_a_burst_of_transactions_shares_the_pool_and_opens_no_extra_connections(
    postgres_url: str,
) -> None:
    db = Database(postgres_url, pool_size=POOL)
    opened = closed = 0
    count = threading.Lock()

    def on_connect(*_: object) -> None:
        nonlocal opened
        with count:
            opened += 1

    def on_close(*_: object) -> None:
        nonlocal closed
        with count:
            closed += 1

    event.listen(db.engine, "connect", on_connect)
    event.listen(db.engine, "close", on_close)
    try:
        assert burst(db) == [1] * BURST
        assert (opened, closed) == (POOL, 0), "the burst opened (or closed) extra connections"
        assert db.engine.pool.checkedin() == POOL  # type: ignore[attr-defined]
    finally:
        db.dispose()


def test_warming_opens_the_whole_pool_ahead_so_a_burst_opens_none(postgres_url: str) -> None:
    db = Database(postgres_url, pool_size=POOL)
    opened: list[tuple[object, ...]] = []
    try:
        assert db.warm() == POOL
        event.listen(db.engine, "connect", lambda *args: opened.append(args))
        assert burst(db) == [1] * BURST
        assert opened == []
    finally:
        db.dispose()


def test_warming_a_database_that_cannot_be_reached_opens_nothing_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = Database(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none", pool_size=POOL)
    try:
        assert db.warm() == 0
    finally:
        db.dispose()
    assert "database connections not opened ahead: OperationalError" in caplog.text
