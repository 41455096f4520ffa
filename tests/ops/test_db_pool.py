"""A process keeps its PostgreSQL connections: a burst waits for them instead of opening more,
and a process can open them all ahead (`Database.warm`, at start-up) so a burst opens none.
A connection idle in the pool is pinged before it is handed out, and replaced if dead; one that
answered moments ago is handed out without the round trip."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url

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


def backend_pid(db: Database) -> int:
    with db.transaction() as tx:
        return int(tx.scalar(text("SELECT pg_backend_pid()")) or 0)


def counted_pings(db: Database, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every ping the pool sends (SQLAlchemy's own, on the dialect)."""
    pings: list[object] = []
    ping = db.engine.dialect.do_ping

    def counting(dbapi_connection: object) -> bool:
        pings.append(dbapi_connection)
        return ping(dbapi_connection)

    monkeypatch.setattr(db.engine.dialect, "do_ping", counting)
    return pings


def test_a_connection_that_died_while_idle_is_replaced_before_it_is_handed_out(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(postgres_url, pool_size=1, ping_after_idle=0)  # idle at all is idle enough
    pings = counted_pings(db, monkeypatch)
    try:
        first = backend_pid(db)
        driver_url = make_url(postgres_url).set(drivername="postgresql")
        with psycopg.connect(driver_url.render_as_string(hide_password=False)) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        second = backend_pid(db)  # no error: the dead one was found out and replaced
        assert second not in (0, first)
        assert len(pings) == 3  # at each checkout, and the replacement's before it went out
    finally:
        db.dispose()


def test_a_connection_back_moments_ago_is_handed_out_without_a_ping(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(postgres_url, pool_size=2, ping_after_idle=3600)
    pings = counted_pings(db, monkeypatch)
    try:
        assert db.warm() == 2  # both in the pool: first in, first out would take turns
        pids = [backend_pid(db) for _ in range(3)]
        assert pings == []
        assert len(set(pids)) == 1  # the one back last goes out first: a busy process reuses it
    finally:
        db.dispose()
