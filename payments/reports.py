"""What the dashboard shows: a project's last 30 days, its sessions found by filters, one
session's timeline, attempts and deliveries. Read-only; card data beyond brand and last four is
never stored, so none can be shown."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session as Tx

from payments.model import AttemptState, Environment, Status
from payments.store import (
    ApiKey,
    GatewayCredential,
    PaymentAttempt,
    PaymentSession,
    Project,
    SessionEvent,
    WebhookDelivery,
    WebhookEvent,
)

APPROVED = (Status.PAYMENT_SUCCESS.value, Status.PAYMENT_AUTHORIZED.value)
DAYS = 30
PAGE_SIZE = 25
STUCK_AFTER = timedelta(minutes=15)  # a call collecting this long has likely lost its way


@dataclass
class Day:
    day: date
    approved: int = 0
    failed: int = 0
    amount_cents: int = 0

    @property
    def approval_rate(self) -> float | None:
        tried = self.approved + self.failed
        return self.approved / tried if tried else None


@dataclass
class Overview:
    days: list[Day]
    totals: Counter[str] = field(default_factory=Counter)
    decline_reasons: Counter[str] = field(default_factory=Counter)
    stuck: list[PaymentSession] = field(default_factory=list)
    unknown_attempts: list[PaymentAttempt] = field(default_factory=list)
    failing_events: list[WebhookEvent] = field(default_factory=list)

    @property
    def approved_cents(self) -> int:
        return sum(day.amount_cents for day in self.days)


def _in_project(project: Project, environment: Environment) -> list[ColumnElement[bool]]:
    return [
        PaymentSession.project_id == project.id,
        PaymentSession.environment == environment.value,
    ]


def _events_of(project: Project, environment: Environment) -> list[ColumnElement[bool]]:
    """The project's webhook events in one mode: its sessions' and its own (no session)."""
    return [
        WebhookEvent.project_id == project.id,
        WebhookEvent.environment == environment.value,
    ]


def overview(tx: Tx, project: Project, environment: Environment, *, now: datetime) -> Overview:
    """Payments and approval rate per day for 30 days, totals, declines, what needs attention."""
    first = (now - timedelta(days=DAYS - 1)).date()
    days = {first + timedelta(days=n): Day(first + timedelta(days=n)) for n in range(DAYS)}
    report = Overview(list(days.values()))
    since = datetime.combine(first, time.min, tzinfo=UTC)
    rows = tx.execute(
        select(
            PaymentSession.created_at,
            PaymentSession.status,
            PaymentSession.amount_cents,
            PaymentSession.error_code,
        ).where(*_in_project(project, environment), PaymentSession.created_at >= since)
    )
    for created_at, status, amount_cents, error_code in rows:
        report.totals[status] += 1
        day = days.get(created_at.date())
        if day is None:
            continue
        if status in APPROVED:
            day.approved += 1
            day.amount_cents += amount_cents
        elif status == Status.PAYMENT_FAILED.value:
            day.failed += 1
            report.decline_reasons[error_code or "unknown"] += 1
    report.stuck = list(
        tx.scalars(
            select(PaymentSession)
            .where(
                *_in_project(project, environment),
                PaymentSession.status == Status.COLLECTING.value,
                PaymentSession.updated_at < now - STUCK_AFTER,
            )
            .limit(20)
        )
    )
    report.unknown_attempts = list(
        tx.scalars(
            select(PaymentAttempt)
            .join(PaymentSession, PaymentSession.id == PaymentAttempt.session_id)
            .where(*_in_project(project, environment), PaymentAttempt.state == AttemptState.UNKNOWN)
            .limit(20)
        )
    )
    report.failing_events = list(
        tx.scalars(
            select(WebhookEvent)
            .where(
                *_events_of(project, environment),
                WebhookEvent.delivered.is_(False),
                WebhookEvent.attempts > 0,
            )
            .order_by(WebhookEvent.created_at.desc())
            .limit(20)
        )
    )
    return report


@dataclass(frozen=True)
class SessionFilter:
    status: str | None = None
    caller: str | None = None
    since: date | None = None
    until: date | None = None
    search: str | None = None  # a session id, a card's last four or a confirmation code
    page: int = 1


def find_sessions(
    tx: Tx, project: Project, environment: Environment, wanted: SessionFilter
) -> tuple[list[PaymentSession], bool]:
    """One page of the project's sessions, newest first, and whether another page follows."""
    query = select(PaymentSession).where(*_in_project(project, environment))
    if wanted.status:
        query = query.where(PaymentSession.status == wanted.status)
    if wanted.caller:
        query = query.where(PaymentSession.caller == wanted.caller)
    if wanted.since:
        start = datetime.combine(wanted.since, time.min, tzinfo=UTC)
        query = query.where(PaymentSession.created_at >= start)
    if wanted.until:
        end = datetime.combine(wanted.until + timedelta(days=1), time.min, tzinfo=UTC)
        query = query.where(PaymentSession.created_at < end)
    if wanted.search:
        term = wanted.search.strip()
        query = query.where(
            or_(
                PaymentSession.id == term,
                PaymentSession.card_last4 == term,
                PaymentSession.confirmation_code == term,
            )
        )
    rows = list(
        tx.scalars(
            query.order_by(PaymentSession.created_at.desc(), PaymentSession.id)
            .offset((wanted.page - 1) * PAGE_SIZE)
            .limit(PAGE_SIZE + 1)
        )
    )
    return rows[:PAGE_SIZE], len(rows) > PAGE_SIZE


@dataclass
class SessionDetail:
    session: PaymentSession
    events: list[SessionEvent]
    attempts: list[PaymentAttempt]
    deliveries: list[tuple[WebhookDelivery, WebhookEvent]]


def session_detail(tx: Tx, session: PaymentSession) -> SessionDetail:
    events = tx.scalars(
        select(SessionEvent)
        .where(SessionEvent.session_id == session.id)
        .order_by(SessionEvent.at, SessionEvent.id)
    )
    attempts = tx.scalars(
        select(PaymentAttempt)
        .where(PaymentAttempt.session_id == session.id)
        .order_by(PaymentAttempt.number)
    )
    deliveries = tx.execute(
        select(WebhookDelivery, WebhookEvent)
        .join(WebhookEvent, WebhookDelivery.event_id == WebhookEvent.id)
        .where(WebhookEvent.session_id == session.id)
        .order_by(WebhookDelivery.created_at, WebhookDelivery.attempt)
    )
    return SessionDetail(session, list(events), list(attempts), [(d, e) for d, e in deliveries])


def account_keys(tx: Tx, account_id: str) -> list[ApiKey]:
    return list(
        tx.scalars(
            select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.created_at)
        )
    )


def configured_gateways(tx: Tx, project: Project) -> list[GatewayCredential]:
    """Which gateways and modes have credentials, and since when (never their values)."""
    return list(
        tx.scalars(
            select(GatewayCredential)
            .where(GatewayCredential.project_id == project.id)
            .order_by(GatewayCredential.gateway, GatewayCredential.environment)
        )
    )


def recent_deliveries(
    tx: Tx, project: Project, environment: Environment, *, limit: int = 10
) -> list[tuple[WebhookDelivery, WebhookEvent]]:
    """The project's latest webhook delivery attempts in one mode, newest first."""
    rows = tx.execute(
        select(WebhookDelivery, WebhookEvent)
        .join(WebhookEvent, WebhookDelivery.event_id == WebhookEvent.id)
        .where(*_events_of(project, environment))
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.attempt.desc())
        .limit(limit)
    )
    return [(delivery, event) for delivery, event in rows]
