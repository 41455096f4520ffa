"""Merchant webhooks, part one: the transactional outbox and the signature.

`record_status_change` runs inside `payments.sessions.transition`, so the event row commits or
rolls back together with the status it announces; `payments.delivery` sends it later. The body is
`payments.views.SessionWebhook` (the session object, `amount` as a JSON number, plus `event_id` and
`source`), signed as `Maven-Signature: t=<unix>,v1=<hex>`. An event about the project itself
(`record_project_event`, e.g. the widget breaker's `widget-charges-paused`) has no session: its
body is `event_id`, `event` and what it reports.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy.orm import Session as Tx

from payments.crypto import Sealer
from payments.errors import Conflict
from payments.model import Status
from payments.project_settings import OptInEvent, project_settings
from payments.store import OUTBOX, PaymentSession, Project, WebhookEvent
from payments.views import webhook_body

WEBHOOK_SECRET_PURPOSE = "webhook-secret"  # noqa: S105  # a key-derivation label, not a secret
SECRET_PREFIX = "whsec_"  # noqa: S105  # the public prefix of every secret
SIGNATURE_HEADER = "Maven-Signature"
ALWAYS_SENT = frozenset({Status.PAYMENT_SUCCESS, Status.PAYMENT_AUTHORIZED, Status.PAYMENT_FAILED})
OPT_IN = frozenset(Status(event.value) for event in OptInEvent if event.value in set(Status))
REVERSED_EVENT = "payment-reversed"
TEST_EVENT = "test"


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(16)


def wants_event(project: Project, status: Status) -> bool:
    """Payment results always go out; expired/cancelled/abandoned only when the project opted in."""
    if not project.webhook_url:
        return False
    if status in ALWAYS_SENT:
        return True
    return status in OPT_IN and status.value in project_settings(project).webhook_events


def record_status_change(tx: Tx, session: PaymentSession, to: Status, now: datetime) -> None:
    """Write the outbox row for a status change, in the caller's transaction."""
    project = tx.get_one(Project, session.project_id)
    if wants_event(project, to):
        _record(tx, session, project, to.value, now, {})


def record_reversal(
    tx: Tx, session: PaymentSession, now: datetime, reversal: Mapping[str, object]
) -> None:
    """Tell the merchant a late payment on an ended session was given back (always sent).

    The body is the session (still in its final status) plus `event: "payment-reversed"` and
    `reversal: {kind, transaction_id, reversal_id, amount}`.
    """
    project = tx.get_one(Project, session.project_id)
    if project.webhook_url:
        extra: dict[str, object] = {"event": REVERSED_EVENT, "reversal": dict(reversal)}
        _record(tx, session, project, REVERSED_EVENT, now, extra)


def record_after_payment(
    tx: Tx, session: PaymentSession, event: OptInEvent, now: datetime, extra: dict[str, object]
) -> None:
    """Tell a project that opted in about a refund, capture or void (payments.refunds).

    The body is the session (its status unchanged) plus `event` and the operation under `extra`.
    """
    project = tx.get_one(Project, session.project_id)
    if project.webhook_url and event in project_settings(project).webhook_events:
        _record(tx, session, project, event.value, now, {"event": event.value, **extra})


def record_test_event(tx: Tx, session: PaymentSession, now: datetime) -> str:
    """A `test` event for a test-mode session, signed and sent like every other; its id.

    The body is the session plus `event: "test"`. Raises Conflict without a webhook URL.
    """
    project = tx.get_one(Project, session.project_id)
    if not project.webhook_url:
        raise Conflict("Set a webhook URL first.")
    return _record(tx, session, project, TEST_EVENT, now, {"event": TEST_EVENT})


def _record(
    tx: Tx,
    session: PaymentSession,
    project: Project,
    event_type: str,
    now: datetime,
    extra: dict[str, object],
) -> str:
    event_id = new_event_id()
    body = webhook_body(session, project, event_id).model_dump(mode="json") | extra
    return _add(tx, project, session.id, session.environment, event_type, now, body, event_id)


def record_project_event(
    tx: Tx,
    project: Project,
    environment: str,
    event_type: str,
    now: datetime,
    body: Mapping[str, object],
) -> None:
    """Tell the merchant something about the project itself, not one session (always sent)."""
    if project.webhook_url:
        _add(tx, project, None, environment, event_type, now, dict(body))


def _add(
    tx: Tx,
    project: Project,
    session_id: str | None,
    environment: str,
    event_type: str,
    now: datetime,
    body: dict[str, object],
    event_id: str | None = None,
) -> str:
    event_id = event_id or new_event_id()
    tx.add(
        WebhookEvent(
            id=event_id,
            project_id=project.id,
            session_id=session_id,
            environment=environment,
            type=event_type,
            payload=json.dumps({"event_id": event_id} | body, separators=(",", ":")),
            created_at=now,
            delivered=False,
            attempts=0,
            next_attempt_at=now,
        )
    )
    tx.info.setdefault(OUTBOX, []).append(event_id)
    return event_id


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    """`t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`, exactly as Maven signs."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def project_secret(project: Project, sealer: Sealer) -> str | None:
    if project.webhook_secret_sealed is None:
        return None
    return sealer.open(project.webhook_secret_sealed).decode()


def rotate_secret(project: Project, sealer: Sealer) -> str:
    """Make a new `whsec_` secret; the plaintext is returned once and stored only sealed."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    project.webhook_secret_sealed = sealer.seal(secret.encode())
    return secret
