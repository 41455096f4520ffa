"""SQLAlchemy 2.0 tables and the database handle. Card numbers and security codes have no column."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Connection, Dialect, Engine, make_url
from sqlalchemy.exc import InvalidatePoolError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

from payments.model import Status
from payments.settings import DATABASE_POOL_SIZE

# Access codes are unique among the sessions a call can still bind (payments.sessions).
ACCESS_CODE_INDEX = "uq_sessions_active_access_code"
_BINDABLE = text(
    "status IN ({})".format(", ".join(f"'{s.value}'" for s in Status if not s.is_terminal))
)

log = logging.getLogger(__name__)


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite drops the zone; this puts it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    # Typed by payments.project_settings.ProjectSettings; JSON, so settings grow without migrations.
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    environment: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class PaymentSession(Base):
    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_caller_created", "caller", "created_at"),
        Index("ix_sessions_status_expires", "status", "expires_at"),
        Index(
            ACCESS_CODE_INDEX,
            "access_code",
            unique=True,
            postgresql_where=_BINDABLE,
            sqlite_where=_BINDABLE,
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    environment: Mapped[str] = mapped_column(String(8))
    channel: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(24))
    amount_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    mode: Mapped[str] = mapped_column(String(16))
    gateway: Mapped[str] = mapped_column(String(16))
    caller: Mapped[str | None] = mapped_column(String(20))
    description: Mapped[str | None] = mapped_column(String(500))
    callback: Mapped[str | None] = mapped_column(String(256))
    memory: Mapped[str | None] = mapped_column(Text)
    billing_address: Mapped[dict[str, Any] | None]
    language: Mapped[str | None] = mapped_column(String(16))
    access_code: Mapped[str | None] = mapped_column(String(6), index=True)
    call_sid: Mapped[str | None] = mapped_column(String(64), index=True)
    transfer_status: Mapped[str | None] = mapped_column(String(24))
    card_brand: Mapped[str | None] = mapped_column(String(24))
    card_last4: Mapped[str | None] = mapped_column(String(4))
    processor: Mapped[dict[str, Any] | None]
    # Digits the payer hears and sees on success (payments.sessions.transition sets it).
    confirmation_code: Mapped[str | None] = mapped_column(String(8))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(String(500))
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]
    # After the payment (payments.refunds): what was captured, when, and what went back.
    captured_cents: Mapped[int | None] = mapped_column(Integer)
    captured_at: Mapped[datetime | None]
    voided_at: Mapped[datetime | None]
    refunded_cents: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    refunds: Mapped[list[MoneyOperation]] = relationship(
        primaryjoin="and_(PaymentSession.id == MoneyOperation.session_id, "
        "MoneyOperation.kind == 'refund')",
        order_by="MoneyOperation.number",
        viewonly=True,
    )


class SessionEvent(Base):
    """Every status change of a session, with when and why."""

    __tablename__ = "session_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    at: Mapped[datetime]
    from_status: Mapped[str | None] = mapped_column(String(24))
    to_status: Mapped[str] = mapped_column(String(24))
    cause: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any] | None]


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("account_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(36))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None]
    body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(index=True)


class GatewayCredential(Base):
    """A project's credentials for one gateway and mode, sealed with PAYDIAL_SECRET_KEY."""

    __tablename__ = "gateway_credentials"
    __table_args__ = (UniqueConstraint("project_id", "gateway", "environment"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    gateway: Mapped[str] = mapped_column(String(16))
    environment: Mapped[str] = mapped_column(String(8))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime]


class PaymentAttempt(Base):
    """A durable record written before the gateway is called, so an answer is never lost."""

    __tablename__ = "payment_attempts"
    __table_args__ = (UniqueConstraint("session_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str] = mapped_column(String(80), unique=True)
    state: Mapped[str] = mapped_column(String(16))
    card_brand: Mapped[str | None] = mapped_column(String(24))
    card_last4: Mapped[str | None] = mapped_column(String(4))
    processor: Mapped[dict[str, Any] | None]
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    # Reconciliation of an attempt whose outcome is unresolved (payments.reconcile).
    reconcile_checks: Mapped[int] = mapped_column(Integer, default=0)
    next_check_at: Mapped[datetime | None] = mapped_column(index=True)


class MoneyOperation(Base):
    """A refund, capture or void of a session's payment: recorded before the gateway is called,
    under an idempotency key derived from the session, the kind and its number (payments.refunds).
    """

    __tablename__ = "money_operations"
    __table_args__ = (UniqueConstraint("session_id", "kind", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # refund | capture | void
    number: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str] = mapped_column(String(80), unique=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    state: Mapped[str] = mapped_column(String(16))  # pending | succeeded | failed | unknown
    amount_cents: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(String(500))
    reference: Mapped[str] = mapped_column(String(80))  # the gateway transaction acted on
    gateway_id: Mapped[str | None] = mapped_column(String(80))  # the refund's (capture's) own id
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    reconcile_checks: Mapped[int] = mapped_column(Integer, default=0)
    next_check_at: Mapped[datetime | None] = mapped_column(index=True)


class WebhookEvent(Base):
    """The outbox: written in the same transaction as the status change it announces."""

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    # None for an event about the project itself (payments.outbox.record_project_event).
    session_id: Mapped[str | None] = mapped_column(ForeignKey("sessions.id"), index=True)
    # test / live: a live event is only ever sent over https (payments.delivery).
    environment: Mapped[str | None] = mapped_column(String(8))
    type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    delivered: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When the next scheduled delivery is due; None once delivered or given up (payments.delivery).
    next_attempt_at: Mapped[datetime | None] = mapped_column(index=True)


class WebhookDelivery(Base):
    """One HTTP attempt to deliver an event."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(String(2048))
    status_code: Mapped[int | None]
    latency_ms: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]


class SettingChange(Base):
    """The audit log of project settings: who changed which setting when, from what to what."""

    __tablename__ = "setting_changes"
    __table_args__ = (Index("ix_setting_changes_project_at", "project_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(320))
    setting: Mapped[str] = mapped_column(String(100))
    old: Mapped[Any] = mapped_column(JSON, nullable=True)
    new: Mapped[Any] = mapped_column(JSON, nullable=True)


class DashboardUser(Base):
    """A person who signs in to the dashboard; belongs to one account. Argon2 hash only."""

    __tablename__ = "dashboard_users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    totp_secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)  # the last code used, spent
    created_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None]


class VelocityEvent(Base):
    """A failed payment attempt counted against a caller or a card (keyed HMAC, never the PAN)."""

    __tablename__ = "velocity_events"
    __table_args__ = (Index("ix_velocity_events_subject_at", "subject", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(String(80))
    at: Mapped[datetime]
    environment: Mapped[str | None] = mapped_column(String(8))  # test / live; None before 0003


class ProjectIntegration(Base):
    """A project's agent-platform settings in one mode: the hashed integration token (whk_…)
    and, when set, the Retell API key (sealed) that signs Retell's requests."""

    __tablename__ = "project_integrations"
    __table_args__ = (UniqueConstraint("project_id", "environment"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    environment: Mapped[str] = mapped_column(String(8))
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    retell_key_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime]


def _ping_after_idle(engine: Engine, seconds: float) -> None:
    """SQLAlchemy's pre-ping, for connections that have been idle in the pool for `seconds`.

    A connection that answered moments ago is as likely to be alive as one a request is using
    now; pinging it would cost every checkout a round trip, two per session create. One idle
    longer is pinged, and a dead one is replaced before it is handed out, along with every other
    connection opened before it (they share its fate: a restart, a failover).
    https://docs.sqlalchemy.org/en/20/core/pooling.html#disconnect-handling-pessimistic
    """
    dialect = engine.dialect

    def idle_from_now(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    def ping_if_idle(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        if time.monotonic() - record.info.get(_IDLE_SINCE, -math.inf) < seconds:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                raise InvalidatePoolError() from error
            raise

    event.listen(engine, "connect", idle_from_now)  # a new connection has just answered
    event.listen(engine, "checkin", idle_from_now)
    event.listen(engine, "checkout", ping_if_idle)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
    dbapi_connection.isolation_level = None  # we say BEGIN ourselves (_sqlite_begin)


def _sqlite_begin(connection: Any) -> None:
    """SQLite has no SELECT ... FOR UPDATE: take the write lock at BEGIN instead, so two
    transactions that read then write (start an attempt, cancel a session) run one after the
    other rather than failing with "database is locked" when both try to upgrade their lock.
    https://docs.sqlalchemy.org/en/20/dialects/sqlite.html#serializable-isolation-savepoints-transactional-ddl
    """
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_private_sqlite_file(url: str) -> None:
    """Create a SQLite database file readable by its owner only (SQLite itself would use 0644)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    with contextlib.suppress(FileExistsError):
        os.close(os.open(Path(parsed.database), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


OUTBOX = "paydial_outbox"  # session.info key: ids of webhook events added in the transaction
ENDED_CALLS = "paydial_ended_calls"  # session.info key: CallSids of the sessions it ended
# A pooled connection idle for longer than this is pinged before it is handed out (seconds).
PING_AFTER_IDLE = 0.25
_IDLE_SINCE = "paydial_idle_since"  # connection record info key: when it last answered


class Database:
    """One engine and session factory per process; `with db.transaction()` commits or rolls back.

    `on_outbox` is told the ids of webhook events a transaction wrote, once it has committed
    (never for a rolled-back one), so they can be sent at once instead of at the next sweep.
    `on_session_ended` is told, the same way, the CallSids of call-bound sessions it ended, so a
    call still in progress hears that at its next webhook.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = DATABASE_POOL_SIZE,
        ping_after_idle: float = PING_AFTER_IDLE,
    ) -> None:
        self.url = url
        create_private_sqlite_file(url)
        # SQLite's own pools fit it (a file opens in microseconds); a server's connections are
        # kept, `pool_size` of them, with none opened beyond (see Settings.database_pool_size),
        # the one back last handed out first, so a busy process reuses one that has just answered.
        pool = (
            {}
            if url.startswith("sqlite")
            else {"pool_size": pool_size, "max_overflow": 0, "pool_use_lifo": True}
        )
        # A statement's parameters hold what callers sent (and on error reach tracebacks): never
        # in an exception message or a log line.
        self.engine: Engine = create_engine(url, hide_parameters=True, **pool)
        _ping_after_idle(self.engine, ping_after_idle)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.on_outbox: Callable[[list[str]], None] | None = None
        self.on_session_ended: Callable[[list[str]], None] | None = None
        event.listen(self._sessions, "after_commit", self._after_commit)

    def _after_commit(self, session: OrmSession) -> None:
        event_ids: list[str] = session.info.pop(OUTBOX, [])
        if event_ids and self.on_outbox is not None:
            self.on_outbox(event_ids)
        call_sids: list[str] = session.info.pop(ENDED_CALLS, [])
        if call_sids and self.on_session_ended is not None:
            self.on_session_ended(call_sids)

    @contextmanager
    def transaction(self) -> Iterator[OrmSession]:
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[OrmSession]:
        """A session for reads only. On PostgreSQL its statements run in autocommit, each in a
        snapshot of its own: a single read saves the BEGIN and COMMIT round trips of
        `transaction`. On SQLite it is `transaction`: we say BEGIN ourselves there
        (`_sqlite_begin`), and handing back an autocommit connection would turn pysqlite's own
        BEGINs on again.
        https://docs.sqlalchemy.org/en/20/core/connections.html#setting-transaction-isolation-levels-including-dbapi-autocommit
        """
        if self.engine.dialect.name == "sqlite":
            with self.transaction() as session:
                yield session
            return
        with self.statements() as connection, self._sessions(bind=connection) as session:
            yield session

    @contextmanager
    def statements(self) -> Iterator[Connection]:
        """A connection for Core statements that each stand on their own, without an ORM
        session: in autocommit on PostgreSQL, in a transaction of its own on SQLite. For reads,
        and for writes that are one statement on PostgreSQL (`sessions.open_session`,
        `ivr.binding.record_transfer`)."""
        if self.engine.dialect.name == "sqlite":
            with self.engine.begin() as connection:
                yield connection
            return
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            yield connection

    def warm(self) -> int:
        """Open the pool's connections now, at start-up, not in the first burst of traffic: each
        is a PostgreSQL backend forked, a cost that otherwise lands when every core is busy. The
        number opened; a database that cannot be reached leaves the rest for later."""
        pool = self.engine.pool
        if self.engine.dialect.name == "sqlite" or not isinstance(pool, QueuePool):
            return 0
        opened: list[Connection] = []
        try:
            while len(opened) < pool.size():
                opened.append(self.engine.connect())
        except OperationalError as error:
            log.warning("database connections not opened ahead: %s", type(error).__name__)
        finally:
            for connection in opened:
                connection.close()  # back to the pool, which keeps it
        return len(opened)

    def dispose(self) -> None:
        self.engine.dispose()
