"""`Database.read`: a read outside a transaction on PostgreSQL (no BEGIN and COMMIT round trips),
and a pooled connection that goes back to transactions afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from payments.store import Database

IDLE, INTRANS = psycopg.pq.TransactionStatus.IDLE, psycopg.pq.TransactionStatus.INTRANS


@pytest.fixture
def one_connection(database_url: str) -> Iterator[Database]:
    """A database whose pool holds one connection, so each block reuses the one before's."""
    db = Database(database_url, pool_size=1)
    with db.transaction() as tx:
        tx.execute(text("CREATE TABLE IF NOT EXISTS read_probe (n INTEGER)"))
    try:
        yield db
    finally:
        with db.transaction() as tx:
            tx.execute(text("DROP TABLE read_probe"))
        db.dispose()


def driver_connection(tx: object) -> object:
    return tx.connection().connection.dbapi_connection  # type: ignore[attr-defined]


def test_a_read_on_postgresql_leaves_no_transaction_open(postgres_url: str) -> None:
    db = Database(postgres_url, pool_size=1)
    try:
        with db.read() as tx:
            assert tx.scalar(text("SELECT 1")) == 1
            assert driver_connection(tx).info.transaction_status == IDLE  # type: ignore[attr-defined]
        with db.transaction() as tx:
            assert tx.scalar(text("SELECT 1")) == 1
            assert driver_connection(tx).info.transaction_status == INTRANS  # type: ignore[attr-defined]
    finally:
        db.dispose()


def test_after_a_read_the_same_connection_rolls_a_failed_transaction_back(
    one_connection: Database,
) -> None:
    db = one_connection
    with db.read() as tx:
        assert tx.scalar(text("SELECT count(*) FROM read_probe")) == 0
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.execute(text("INSERT INTO read_probe (n) VALUES (1)"))
        raise RuntimeError("the transaction fails after its write")
    with db.read() as tx:
        assert tx.scalar(text("SELECT count(*) FROM read_probe")) == 0


def test_a_read_on_sqlite_leaves_beginning_to_us(tmp_path: Path) -> None:
    """pysqlite must not start transactions of its own after a read (`_sqlite_begin` does)."""
    db = Database(f"sqlite:///{tmp_path / 'read.db'}")
    try:
        with db.read() as tx:
            assert tx.scalar(text("SELECT 1")) == 1
        with db.transaction() as tx:
            assert driver_connection(tx).isolation_level is None  # type: ignore[attr-defined]
    finally:
        db.dispose()
