"""A process keeps its PostgreSQL connections: a burst waits for them instead of opening more."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import event, text

from payments.store import Database

POOL = 3
BURST = 12  # transactions at once, four times the pool


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

    def transaction(_: int) -> int:
        with db.transaction() as tx:
            return int(tx.scalar(text("SELECT 1 FROM pg_sleep(0.05)")) or 0)

    try:
        with ThreadPoolExecutor(BURST) as pool:
            answers = list(pool.map(transaction, range(BURST)))
        assert answers == [1] * BURST
        assert (opened, closed) == (POOL, 0), "the burst opened (or closed) extra connections"
        assert db.engine.pool.checkedin() == POOL  # type: ignore[attr-defined]
    finally:
        db.dispose()
