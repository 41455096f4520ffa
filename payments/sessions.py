"""Use cases of a payment session: create, read, cancel, expire; the one place status changes.

Time runs out differently for a session that was used: `pending` past `expires_at` reads as
`expired` (never used), while `collecting` past it means its payer left without a word (a call
that vanished with no status callback, a widget closed after a decline) and reads as `abandoned`.
Binding a call pushes `expires_at` to at least the end of the longest call (`bind_window`), so a
session never runs out under a live call.
"""

from __future__ import annotations

import functools
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import phonenumbers
from sqlalchemy import Connection, Insert, Table, bindparam, case, insert, inspect, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as Tx
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from payments.accounts import ProjectRef, account_project_ref
from payments.credentials import has_credentials
from payments.errors import Conflict, InvalidInput, NotFound
from payments.model import (
    UNRESOLVED_ATTEMPT_STATES,
    Channel,
    Environment,
    Gateway,
    PaymentMode,
    Status,
)
from payments.outbox import record_status_change
from payments.project_settings import project_settings
from payments.store import (
    ACCESS_CODE_INDEX,
    ENDED_CALLS,
    Database,
    PaymentAttempt,
    PaymentSession,
    Project,
    SessionEvent,
    new_id,
)

log = logging.getLogger(__name__)

ACTIVE = (Status.PENDING.value, Status.COLLECTING.value)
# The longest a call may stay on the IVR (ivr.callstate keeps a call's hand-back this long).
CALL_BOUND = timedelta(hours=1)
# Draws of an access code before giving up: each clashes only with a code a bindable session holds.
ACCESS_CODE_DRAWS = 5
CONFIRMATION_CODES = range(10_000_000, 100_000_000)  # eight digits, never a leading zero
PREVIEW_DESCRIPTION = "Widget preview and test events (dashboard)"
PREVIEW_AMOUNT_CENTS = 1000
_SESSIONS = cast(Table, PaymentSession.__table__)
_SESSION_EVENTS = cast(Table, SessionEvent.__table__)
# A new session's two rows as plain INSERTs (`_write_session_rows` on SQLite); the event's is
# inline: nothing reads its generated id, so it needs no RETURNING and no result to process.
_INSERT_SESSION = insert(_SESSIONS)
_INSERT_SESSION_EVENT = insert(_SESSION_EVENTS).inline()


@dataclass(frozen=True)
class NewSession:
    """A validated request to open a session; amounts are already in integer cents."""

    project: str
    amount_cents: int
    mode: PaymentMode
    gateway: Gateway
    channel: Channel
    ttl: timedelta
    currency: str = "usd"
    caller: str | None = None
    description: str | None = None
    callback: str | None = None
    memory: str | None = None
    billing_address: dict[str, Any] | None = None
    language: str | None = None


def _new_access_code() -> str:
    """Six digits. The database keeps them unique among sessions that can still be bound to a
    call (store.ACCESS_CODE_INDEX): a clash fails the insert, and `open_session` draws again."""
    return f"{secrets.randbelow(1_000_000):06d}"


def access_code_taken(error: IntegrityError) -> bool:
    """Whether an insert failed because its session drew an access code already in use."""
    message = str(error.orig)  # PostgreSQL names the index, SQLite the column
    return ACCESS_CODE_INDEX in message or "sessions.access_code" in message


def _check_callback_country(callback: str | None, countries: list[str]) -> None:
    """A transfer dials out on the operator's bill, so only to the project's allowed countries."""
    if callback is None or not callback.startswith("+"):
        return
    region = phonenumbers.region_code_for_number(phonenumbers.parse(callback))
    if region not in countries:
        raise InvalidInput(
            ("body", "callback"),
            f"Callback numbers must be in one of: {', '.join(countries)}",
            "callback_country",
        )


def _check_live_credentials(
    db: Connection | Tx, project: ProjectRef, gateway: Gateway, environment: Environment
) -> None:
    """A live session needs the project's live credentials for its gateway; test mode falls back
    to the simulator. Refused here, before a caller keys a whole card for nothing."""
    if environment is not Environment.LIVE or has_credentials(
        db, project.id, gateway.value, environment.value
    ):
        return
    log.warning(
        "session refused: project %s has no %s credentials for %s",
        project.id,
        environment.value,
        gateway.value,
    )
    raise InvalidInput(
        ("body", "gateway"),
        f"no live credentials are configured for {gateway.value} on project {project.slug}",
        "gateway_configuration",
    )


def _insert_session(
    db: Connection | Tx,
    *,
    account_id: str,
    environment: Environment,
    new: NewSession,
    now: datetime,
) -> dict[str, Any]:
    """Check a new session against its project and write its rows (`_write_session_rows`); its
    column values. Plain statements: the unit of work's flush of two new objects cost a create
    more CPU than the rest of its database work."""
    project = account_project_ref(db, account_id, new.project)
    _check_callback_country(new.callback, project_settings(project).callback_countries)
    _check_live_credentials(db, project, new.gateway, environment)
    values: dict[str, Any] = {
        "id": new_id(),
        "account_id": account_id,
        "project_id": project.id,
        "environment": environment.value,
        "channel": new.channel.value,
        "status": Status.PENDING.value,
        "amount_cents": new.amount_cents,
        "currency": new.currency,
        "mode": new.mode.value,
        "gateway": new.gateway.value,
        "caller": new.caller,
        "description": new.description,
        "callback": new.callback,
        "memory": new.memory,
        "billing_address": new.billing_address,
        "language": new.language,
        "access_code": _new_access_code() if new.channel is Channel.VOICE else None,
        "attempt_count": 0,
        "refunded_cents": 0,
        "created_at": now,
        "updated_at": now,
        "expires_at": now + new.ttl,
    }
    _write_session_rows(db, values)
    return values


@functools.cache
def _insert_session_with_event(columns: tuple[str, ...]) -> Insert:
    """One statement writing a new session (`columns` bound by name) and its `created` event."""
    session = (
        insert(_SESSIONS)
        .values({column: bindparam(column) for column in columns})
        .returning(_SESSIONS.c.id, _SESSIONS.c.created_at)
        .cte("new_session")
    )
    return insert(_SESSION_EVENTS).from_select(
        ["session_id", "at", "to_status", "cause"],
        select(
            session.c.id, session.c.created_at, literal(Status.PENDING.value), literal("created")
        ),
    )


def _write_session_rows(db: Connection | Tx, values: dict[str, Any]) -> None:
    """A new session's row and its `created` event. On PostgreSQL one statement, the session's
    INSERT in a CTE: atomic on its own, so `open_session` needs no BEGIN and COMMIT around it,
    and writes with one round trip instead of four. SQLite has no INSERT in a CTE: two INSERTs,
    in the transaction every SQLite connection here is in."""
    dialect = db.dialect if isinstance(db, Connection) else db.get_bind().dialect
    if dialect.name == "postgresql":
        db.execute(_insert_session_with_event(tuple(values)), values)
        return
    db.execute(_INSERT_SESSION, values)
    db.execute(
        _INSERT_SESSION_EVENT,
        {
            "session_id": values["id"],
            "at": values["created_at"],
            "to_status": Status.PENDING.value,
            "cause": "created",
        },
    )


def create_session(
    tx: Tx, *, account_id: str, environment: Environment, new: NewSession, now: datetime
) -> PaymentSession:
    """A new session in `tx`, which it joins as a loaded, persistent object."""
    values = _insert_session(tx, account_id=account_id, environment=environment, new=new, now=now)
    session = PaymentSession(**values)
    make_transient_to_detached(session)
    tx.add(session)
    return session


@dataclass(frozen=True)
class OpenedSession:
    """What the API answers about a session it has just opened."""

    id: str
    status: str
    access_code: str | None
    created_at: datetime
    expires_at: datetime


def open_session(
    db: Database, *, account_id: str, environment: Environment, new: NewSession, now: datetime
) -> OpenedSession:
    """A new session, drawing another access code on a clash. On a bare connection, without an
    ORM session (a create is the API's busiest write, and one of those cost it a tenth): in
    autocommit on PostgreSQL, where the rows are one statement (`_write_session_rows`), in a
    transaction on SQLite (`Database.statements`)."""
    for _ in range(ACCESS_CODE_DRAWS):
        try:
            with db.statements() as connection:
                values = _insert_session(
                    connection, account_id=account_id, environment=environment, new=new, now=now
                )
        except IntegrityError as error:
            if not access_code_taken(error):
                raise
        else:
            return OpenedSession(
                values["id"],
                values["status"],
                values["access_code"],
                values["created_at"],
                values["expires_at"],
            )
    raise Conflict("No access code is free right now: too many sessions are open; retry shortly")


def preview_session(tx: Tx, project: Project, *, ttl: timedelta, now: datetime) -> PaymentSession:
    """The project's test-mode widget session the dashboard previews and sends test events for.

    One stays in use while it has at least half its time left, so viewing the settings page
    again does not open a session each time.
    """
    found = tx.scalar(
        select(PaymentSession)
        .where(
            PaymentSession.project_id == project.id,
            PaymentSession.environment == Environment.TEST.value,
            PaymentSession.channel == Channel.CHAT.value,
            PaymentSession.status == Status.PENDING.value,
            PaymentSession.description == PREVIEW_DESCRIPTION,
            PaymentSession.expires_at > now + ttl / 2,
        )
        .order_by(PaymentSession.created_at.desc())
        .limit(1)
    )
    if found is not None:
        return found
    new = NewSession(
        project=project.slug,
        amount_cents=PREVIEW_AMOUNT_CENTS,
        mode=PaymentMode.CHARGE,
        gateway=Gateway.STRIPE,
        channel=Channel.CHAT,
        ttl=ttl,
        description=PREVIEW_DESCRIPTION,
    )
    return create_session(
        tx, account_id=project.account_id, environment=Environment.TEST, new=new, now=now
    )


def transition(
    tx: Tx,
    session: PaymentSession,
    to: Status,
    *,
    cause: str,
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> None:
    """Change status and log it; terminal states never change again."""
    current = Status(session.status)
    if current.is_terminal:
        raise Conflict(f"session is already {current.value}")
    if current == to:
        return
    session.status = to.value
    session.updated_at = now
    if to.is_terminal:
        session.completed_at = now
        if session.call_sid is not None:  # its call may still be on: Database.on_session_ended
            tx.info.setdefault(ENDED_CALLS, []).append(session.call_sid)
    if to in (Status.PAYMENT_SUCCESS, Status.PAYMENT_AUTHORIZED):
        # what the payer writes down; the processor's ids stay in `processor`
        session.confirmation_code = str(secrets.choice(CONFIRMATION_CODES))
    tx.add(
        SessionEvent(
            session_id=session.id,
            at=now,
            from_status=current.value,
            to_status=to.value,
            cause=cause,
            detail=detail,
        )
    )
    # A session that was still open has no refunds (they need a payment-success or -authorized
    # session, and those never change status): the webhook body's list is known to be empty
    # without the SELECT its first read would send.
    if "refunds" in inspect(session).unloaded:
        set_committed_value(session, "refunds", [])
    record_status_change(tx, session, to, now)


def payment_in_flight(tx: Tx, session_id: str) -> bool:
    """An attempt whose outcome is not known yet holds the session open until it is resolved."""
    return (
        tx.scalar(
            select(PaymentAttempt.id)
            .where(
                PaymentAttempt.session_id == session_id,
                PaymentAttempt.state.in_(UNRESOLVED_ATTEMPT_STATES),
            )
            .limit(1)
        )
        is not None
    )


def bind_window(expires_at: datetime, now: datetime) -> datetime:
    """A session bound to a call now lives at least as long as the longest call."""
    return max(expires_at, now + CALL_BOUND)


def _time_out(tx: Tx, session: PaymentSession, now: datetime) -> None:
    if session.status == Status.PENDING:
        transition(tx, session, Status.EXPIRED, cause="expired", now=now)
    else:  # collecting: used, then left without a result
        transition(tx, session, Status.ABANDONED, cause="timed_out_while_collecting", now=now)


def expire_if_due(tx: Tx, session: PaymentSession, now: datetime) -> None:
    """Sessions still open past `expires_at` read as expired, or abandoned when they were used."""
    if (
        session.status in ACTIVE
        and now >= session.expires_at
        and not payment_in_flight(tx, session.id)
    ):
        _time_out(tx, session, now)


def expire_due(tx: Tx, now: datetime, *, limit: int = 500) -> int:
    """The sweep: time out open sessions whose time has passed. Returns how many it closed."""
    due = tx.scalars(
        select(PaymentSession)
        .where(
            PaymentSession.status.in_(ACTIVE),
            PaymentSession.expires_at <= now,
            ~select(PaymentAttempt.id)
            .where(
                PaymentAttempt.session_id == PaymentSession.id,
                PaymentAttempt.state.in_(UNRESOLVED_ATTEMPT_STATES),
            )
            .exists(),
        )
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for session in due:
        _time_out(tx, session, now)
    return len(due)


def load_session(
    tx: Tx,
    session_id: str,
    *,
    now: datetime,
    account_id: str | None = None,
    environment: Environment | None = None,
    for_update: bool = False,
) -> PaymentSession:
    """A session by id, within the given account and mode when those are given."""
    query = select(PaymentSession).where(PaymentSession.id == session_id)
    if account_id is not None:
        query = query.where(PaymentSession.account_id == account_id)
    if environment is not None:
        query = query.where(PaymentSession.environment == environment.value)
    if for_update:
        query = query.with_for_update()
    session = tx.scalar(query)
    if session is None:
        raise NotFound("Session not found")
    expire_if_due(tx, session, now)
    return session


def load_session_and_project(
    tx: Tx, session_id: str, *, now: datetime, for_update: bool = False
) -> tuple[PaymentSession, Project]:
    """A session by id and its project, in one read; `for_update` locks the session row only
    (every payment of a project would otherwise queue on the project's row)."""
    query = (
        select(PaymentSession, Project)
        .join(Project, Project.id == PaymentSession.project_id)
        .where(PaymentSession.id == session_id)
    )
    if for_update:
        query = query.with_for_update(of=PaymentSession)
    row = tx.execute(query).one_or_none()
    if row is None:
        raise NotFound("Session not found")
    session, project = row
    expire_if_due(tx, session, now)
    return session, project


def project_of_session(tx: Tx, session_id: str) -> Project | None:
    """The project a session belongs to; None when there is no such session."""
    return tx.scalar(
        select(Project)
        .join(PaymentSession, PaymentSession.project_id == Project.id)
        .where(PaymentSession.id == session_id)
    )


def find_session_for_caller(
    tx: Tx, *, account_id: str, environment: Environment, caller: str, now: datetime
) -> PaymentSession:
    """The most recent active session for a caller, else the latest finished one."""
    candidates = tx.scalars(
        select(PaymentSession)
        .where(
            PaymentSession.account_id == account_id,
            PaymentSession.environment == environment.value,
            PaymentSession.caller == caller,
        )
        .order_by(
            case((PaymentSession.status.in_(ACTIVE), 0), else_=1),
            PaymentSession.created_at.desc(),
        )
        .limit(5)
    ).all()
    for session in candidates:
        expire_if_due(tx, session, now)
    if not candidates:
        raise NotFound("No session for this caller")
    return min(
        candidates,
        key=lambda s: (s.status not in ACTIVE, -s.created_at.timestamp()),
    )


def cancel_session(
    tx: Tx, session_id: str, *, account_id: str, environment: Environment, now: datetime
) -> PaymentSession:
    session = load_session(
        tx, session_id, now=now, account_id=account_id, environment=environment, for_update=True
    )
    if Status(session.status).is_terminal:
        raise Conflict(f"Session is {session.status} and can no longer be cancelled")
    if payment_in_flight(tx, session.id):  # the gateway has it: its answer decides the session
        raise Conflict("A payment is being processed; the gateway's result decides the session")
    transition(tx, session, Status.CANCELLED, cause="cancelled_by_merchant", now=now)
    return session
