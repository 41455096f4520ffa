"""Merchant webhooks, part two: sending outbox events, with retries for up to three days.

An event is first sent right after the transaction that wrote it commits (`deliver_now`, run
as a background job: `payments.jobs`); the periodic sweep (`deliver_due`) sends retries and anything
a crash kept from going out at once. Each send is one signed POST with a short timeout, recorded
as a `WebhookDelivery` (status code, latency, error). A failed event is retried with exponential
backoff and jitter; time comes from `services.clock`, so a test moves it forward instead of
sleeping. Events are claimed with a lease (`next_attempt_at` pushed forward by a compare-and-set;
the sweep's batch picks its candidates under `SKIP LOCKED`), so several workers never send one
event at the same time, and an event claimed by a worker that died is simply picked up again
later. Each process sends to one merchant endpoint at most
`PAYDIAL_WEBHOOK_CONCURRENCY` events at once (`EndpointSlots`); an event that finds its endpoint
full is given back, due again a few seconds later, without counting as an attempt.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from sqlalchemy import ColumnElement, CursorResult, Update, select, update
from sqlalchemy.orm import Session as Tx

from payments import logs
from payments.accounts import find_account_project
from payments.errors import NotFound
from payments.model import Environment
from payments.outbox import (
    SIGNATURE_HEADER,
    WEBHOOK_SECRET_PURPOSE,
    project_secret,
    record_test_event,
    signature_header,
)
from payments.services import Services
from payments.sessions import preview_session
from payments.store import OUTBOX, PaymentSession, Project, WebhookDelivery, WebhookEvent

log = logging.getLogger(__name__)

RETRY_WINDOW = timedelta(days=3)
FIRST_DELAY = timedelta(seconds=30)
MAX_DELAY = timedelta(hours=6)
LEASE = timedelta(minutes=2)
ENDPOINT_BUSY_DELAY = timedelta(seconds=5)  # an event whose endpoint is full waits this long
USER_AGENT = "Paydial-Webhooks/1"


def retry_delay(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min, ... capped at 6 h, each shortened by up to a quarter at random.

    The jitter keeps retries of many events from arriving at a recovering receiver in lockstep,
    and stays below the doubling, so every delay is still longer than the one before.
    """
    base = min(FIRST_DELAY * int(2 ** max(0, attempts - 1)), MAX_DELAY)
    return base * random.uniform(0.75, 1.0)


_Answer = tuple[int | None, int | None, str | None]  # status code, latency in ms, error


@dataclass(frozen=True)
class _Send:
    """Everything a send needs, read in one transaction and used outside it."""

    event_id: str
    session_id: str | None  # its log lines name it (payments.logs.bound)
    url: str | None
    secret: str | None
    body: bytes
    live: bool


class EndpointSlots:
    """How many sends this process has in flight to each merchant endpoint (scheme://host:port).

    A receiver that hangs holds at most `limit` of this process's threads, each for at most the
    webhook timeout; its other events wait their turn in the outbox instead of piling up behind.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: Counter[str] = Counter()

    @contextmanager
    def slot(self, url: str, limit: int) -> Iterator[bool]:
        """Yields True with a slot taken (given back on exit), False when the endpoint is full."""
        parts = urlsplit(url)
        endpoint = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            free = self._busy[endpoint] < limit
            if free:
                self._busy[endpoint] += 1
        try:
            yield free
        finally:
            if free:
                with self._lock:
                    self._busy[endpoint] -= 1


ENDPOINTS = EndpointSlots()


def deliver_due(services: Services, *, limit: int = 50) -> int:
    """Send every event whose time has come; returns how many were attempted."""
    claimed = _claim(services, limit=limit)
    for event_id in claimed:
        if not _send(services, _prepare(services, event_id)):
            _due_again(services, event_id, services.clock() + ENDPOINT_BUSY_DELAY)
    return len(claimed)


def deliver_now(services: Services, event_id: str) -> bool:
    """Send one event just committed, unless it is not due or another process holds it.

    The event is claimed and read in one statement: the lease's compare-and-set returns the
    event it leased. When its endpoint already has its share of sends in this process, the claim
    is given back at once, without an attempt: the event is due again now and a sweep sends it.
    """
    now = services.clock()
    with services.db.transaction() as tx:
        event = tx.scalar(_lease_one(event_id, now).returning(WebhookEvent))
        if event is None:
            return False
        send = _read(services, tx, event)
    if _send(services, send):
        return True
    _due_again(services, event_id, services.clock())
    return False


def _send(services: Services, send: _Send) -> bool:
    """One scheduled send of a claimed event in a slot of its endpoint.

    False when the endpoint is full: nothing was sent or recorded.
    """
    with logs.bound(session_id=send.session_id):
        with ENDPOINTS.slot(send.url or "", services.settings.webhook_concurrency) as free:
            if not free:
                return False
            answer = _post(services, send)
        _record(services, send, answer, scheduled=True)
    return True


def _due_again(services: Services, event_id: str, when: datetime) -> None:
    """Give back a claimed event without an attempt: it is due at `when`."""
    with services.db.transaction() as tx:
        tx.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == event_id, WebhookEvent.delivered.is_(False))
            .values(next_attempt_at=when)
        )


def _claim(services: Services, *, limit: int) -> list[str]:
    """Lease due, undelivered events to this process; ids of those it got."""
    with services.db.transaction() as tx:
        return _lease(tx, services.clock(), limit=limit)


def _due(now: datetime) -> tuple[ColumnElement[bool], ...]:
    return WebhookEvent.delivered.is_(False), WebhookEvent.next_attempt_at <= now


def _lease_one(event_id: str, now: datetime) -> Update:
    """The lease's compare-and-set: the event's next attempt pushed past the lease, if still due."""
    return (
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id, *_due(now))
        .values(next_attempt_at=now + LEASE)
    )


def _lease(tx: Tx, now: datetime, *, limit: int) -> list[str]:
    """Lease due, undelivered events in `tx`; ids of those it got.

    The lease is a compare-and-set (an UPDATE that still requires the event to be due), so two
    processes that both saw an event due cannot both take it, even on SQLite, which has no
    SKIP LOCKED; on PostgreSQL the locked SELECT already keeps them apart.
    """
    candidates = tx.scalars(
        select(WebhookEvent.id)
        .where(*_due(now))
        .order_by(WebhookEvent.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    claimed = []
    for event_id in candidates:
        leased: CursorResult[Any] = tx.execute(_lease_one(event_id, now))  # type: ignore[assignment]
        if leased.rowcount == 1:
            claimed.append(event_id)
    return claimed


def send_event(services: Services, event_id: str) -> WebhookDelivery:
    """One delivery attempt on request (a replay), recorded; it books no retry."""
    send = _prepare(services, event_id)
    with logs.bound(session_id=send.session_id):
        return _record(services, send, _post(services, send), scheduled=False)


def _record(
    services: Services, send: _Send, answer: _Answer, *, scheduled: bool
) -> WebhookDelivery:
    """Record one attempt; a scheduled one also books the next retry on failure."""
    status_code, latency_ms, error = answer
    event_id = send.event_id
    now = services.clock()
    with services.db.transaction() as tx:
        event = tx.get_one(WebhookEvent, event_id, with_for_update=True)
        event.attempts += 1
        delivery = WebhookDelivery(
            event_id=event_id,
            attempt=event.attempts,
            url=send.url or "",
            status_code=status_code,
            latency_ms=latency_ms,
            error=error,
            created_at=now,
        )
        tx.add(delivery)
        ok = status_code is not None and 200 <= status_code < 300
        if ok:
            event.delivered, event.next_attempt_at = True, None
        elif scheduled:
            retry_at = now + retry_delay(event.attempts)
            give_up = retry_at > event.created_at + RETRY_WINDOW
            event.next_attempt_at = None if give_up else retry_at
            if give_up:
                log.warning("webhook %s given up after %d attempts", event_id, event.attempts)
        tx.flush()
        return delivery


def _prepare(services: Services, event_id: str) -> _Send:
    with services.db.transaction() as tx:
        return _read(services, tx, tx.get_one(WebhookEvent, event_id))


def _read(services: Services, tx: Tx, event: WebhookEvent) -> _Send:
    """What sending an event takes: its body, and its project's URL and signing secret."""
    project = tx.get_one(Project, event.project_id)
    secret = project_secret(project, services.sealer(WEBHOOK_SECRET_PURPOSE))
    live = event.environment == Environment.LIVE
    return _Send(
        event.id, event.session_id, project.webhook_url, secret, event.payload.encode(), live
    )


def _post(services: Services, send: _Send) -> _Answer:
    """POST the signed body; (status code, latency in ms, error) and never an exception."""
    if not send.url or not send.secret:
        return None, None, "no webhook URL configured"
    if send.live and not send.url.startswith("https://"):  # kept, and sent once the URL is https
        return None, None, "live events are sent over https only; set an https webhook URL"
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
    timestamp = int(services.clock().timestamp())
    headers[SIGNATURE_HEADER] = signature_header(send.secret, send.body, timestamp)
    started = time.monotonic()
    try:
        response = _http().post(
            send.url,
            data=send.body,
            headers=headers,
            timeout=services.settings.webhook_timeout_seconds,
            allow_redirects=False,
        )
    except requests.Timeout:
        return None, _ms_since(started), "timeout"
    except requests.RequestException as failure:
        return None, _ms_since(started), f"connection error: {type(failure).__name__}"
    elapsed = _ms_since(started)
    response.close()
    problem = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
    return response.status_code, elapsed, problem


_THREAD = threading.local()


def _http() -> requests.Session:
    """This thread's HTTP session: sends to one receiver reuse its kept-alive connections instead
    of a new session and connection (and TLS handshake) per event."""
    session: requests.Session | None = getattr(_THREAD, "session", None)
    if session is None:
        session = _THREAD.session = requests.Session()
    return session


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


@dataclass(frozen=True)
class DeliveryView:
    """A delivery attempt as the merchant API lists it."""

    delivery: WebhookDelivery
    event: WebhookEvent


def deliveries_for_session(
    services: Services, session_id: str, *, account_id: str, environment: Environment
) -> list[DeliveryView]:
    """Every attempt for a session's events, oldest first; NotFound outside the key's reach."""
    with services.db.transaction() as tx:
        session = tx.scalar(
            select(PaymentSession).where(
                PaymentSession.id == session_id,
                PaymentSession.account_id == account_id,
                PaymentSession.environment == environment.value,
            )
        )
        if session is None:
            raise NotFound("Session not found")
        return _attempts(tx, WebhookEvent.session_id == session_id)


def deliveries_for_project(
    services: Services, project: str, *, account_id: str, environment: Environment
) -> list[DeliveryView]:
    """Every attempt for the events about a project itself, not one of its sessions (the widget
    breaker's `widget-charges-paused`), in one mode, oldest first; NotFound outside the key's
    reach. `project` is its slug or id."""
    with services.db.transaction() as tx:
        found = find_account_project(tx, account_id, project)
        return _attempts(
            tx,
            WebhookEvent.project_id == found.id,
            WebhookEvent.session_id.is_(None),
            WebhookEvent.environment == environment.value,
        )


def _attempts(tx: Tx, *events: ColumnElement[bool]) -> list[DeliveryView]:
    """Every delivery attempt for the events these conditions pick, oldest first."""
    rows = tx.execute(
        select(WebhookDelivery, WebhookEvent)
        .join(WebhookEvent, WebhookDelivery.event_id == WebhookEvent.id)
        .where(*events)
        .order_by(WebhookDelivery.created_at, WebhookDelivery.attempt)
    ).all()
    return [DeliveryView(delivery, event) for delivery, event in rows]


def send_test_event(services: Services, project_id: str) -> WebhookDelivery:
    """Record a `test` event on the project's preview session and send it now, signed.

    A failed one stays due, so the sweep retries it like any event. Raises Conflict when the
    project has no webhook URL.
    """
    now = services.clock()
    ttl = timedelta(minutes=services.settings.widget_ttl_minutes)
    with services.db.transaction() as tx:
        session = preview_session(tx, tx.get_one(Project, project_id), ttl=ttl, now=now)
        event_id = record_test_event(tx, session, now)
        tx.info[OUTBOX].remove(event_id)  # sent by this request, not by a job racing it
    return send_event(services, event_id)


def replay(
    services: Services, delivery_id: str, *, account_id: str, environment: Environment
) -> DeliveryView:
    """Send a delivery's event again now (same body and event_id, fresh signature)."""
    try:
        uuid.UUID(delivery_id)
    except ValueError:
        raise NotFound("Delivery not found") from None
    with services.db.transaction() as tx:
        row = tx.execute(
            select(WebhookEvent)
            .join(WebhookDelivery, WebhookDelivery.event_id == WebhookEvent.id)
            .join(Project, Project.id == WebhookEvent.project_id)
            .where(
                WebhookDelivery.id == delivery_id,
                Project.account_id == account_id,
                WebhookEvent.environment == environment.value,
            )
        ).scalar_one_or_none()
        if row is None:
            raise NotFound("Delivery not found")
        event_id = row.id
    delivery = send_event(services, event_id)
    with services.db.transaction() as tx:
        return DeliveryView(delivery, tx.get_one(WebhookEvent, event_id))
