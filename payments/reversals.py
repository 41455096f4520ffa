"""Money and status always agree: a payment that lands on an ended session is given back at once.

A cancel is refused once an attempt is with the gateway, so this is the backstop for a race that
still slips through. `payments.attempts.record_result` marks such an attempt `reversing` (and logs
`late_payment_received`) instead of keeping the money; `reverse_attempt` then voids it at the
gateway, or refunds it when a void is too late, under keys derived from the attempt's own, so a
retry never reverses twice. Done, the attempt reads `reversed`, the session's log says
`payment_reversed` and the merchant gets a `payment-reversed` webhook. A reversal the gateway
would not take now stays due and the sweep (`reverse_due`) tries again with growing pauses.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from gateways.base import GatewayError, NotVoidable, ReversalResult
from payments import backoff, logs
from payments.backoff import next_pause
from payments.credentials import project_gateway
from payments.model import AttemptState
from payments.outbox import record_reversal
from payments.services import Services
from payments.store import PaymentAttempt, PaymentSession, SessionEvent

log = logging.getLogger(__name__)

REVERSED_CODE = "payment_reversed"
REVERSED_MESSAGE = "The session had already ended, so the payment was given back."


def reversal_keys(attempt_key: str) -> tuple[str, str]:
    """The void's and the refund's idempotency keys, derived from the attempt's."""
    return f"{attempt_key}-void", f"{attempt_key}-refund"


def reverse_attempt(services: Services, attempt_id: int) -> bool:
    """Void (else refund) one `reversing` attempt and record it; False when it must wait."""
    with services.db.transaction() as tx:
        attempt = tx.get_one(PaymentAttempt, attempt_id)
        if attempt.state != AttemptState.REVERSING:
            return attempt.state == AttemptState.REVERSED
        session = tx.get_one(PaymentSession, attempt.session_id)
        reference = str((attempt.processor or {}).get("transaction_id") or "")
        key, amount = attempt.idempotency_key, session.amount_cents
        where = (session.project_id, session.gateway, session.environment)
        session_id = session.id
    void_key, refund_key = reversal_keys(key)
    with logs.bound(session_id=session_id):
        try:
            gateway = project_gateway(services, *where)
            try:
                reversal = gateway.void(reference, idempotency_key=void_key)
            except NotVoidable:
                reversal = gateway.refund(reference, amount, idempotency_key=refund_key)
        except GatewayError as error:
            log.error("reversal of %s not done yet: %s (%s)", key, type(error).__name__, error.code)
            _retry_later(services, attempt_id)
            return False
        _record(services, attempt_id, reversal)
    return True


def _retry_later(services: Services, attempt_id: int) -> None:
    now = services.clock()
    with services.db.transaction() as tx:
        attempt = tx.get_one(PaymentAttempt, attempt_id, with_for_update=True)
        pause = next_pause(attempt.reconcile_checks)
        attempt.reconcile_checks += 1
        attempt.next_check_at = now + pause


def _record(services: Services, attempt_id: int, reversal: ReversalResult) -> None:
    now = services.clock()
    with services.db.transaction() as tx:
        attempt = tx.get_one(PaymentAttempt, attempt_id, with_for_update=True)
        if (
            attempt.state != AttemptState.REVERSING
        ):  # another worker recorded the same reversal first
            return
        session = tx.get_one(PaymentSession, attempt.session_id, with_for_update=True)
        attempt.state, attempt.finished_at, attempt.next_check_at = AttemptState.REVERSED, now, None
        detail = {
            "attempt": attempt.number,
            "kind": reversal.kind,
            "transaction_id": reversal.reference,
            "reversal_id": reversal.reversal_id,
            "amount_cents": reversal.amount_cents or session.amount_cents,
        }
        attempt.processor = {**(attempt.processor or {}), "reversal": detail}
        tx.add(
            SessionEvent(
                session_id=session.id,
                at=now,
                from_status=session.status,
                to_status=session.status,
                cause="payment_reversed",
                detail=detail,
            )
        )
        record_reversal(tx, session, now, detail)


def reverse_due(services: Services, *, limit: int = 20) -> int:
    """The sweep: retry every reversal whose pause is over; returns how many it tried."""
    now = services.clock()
    with services.db.transaction() as tx:
        due = tx.scalars(
            select(PaymentAttempt.id)
            .where(
                PaymentAttempt.state == AttemptState.REVERSING, PaymentAttempt.next_check_at <= now
            )
            .order_by(PaymentAttempt.next_check_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        for attempt in tx.scalars(select(PaymentAttempt).where(PaymentAttempt.id.in_(due))):
            attempt.next_check_at = (
                now + backoff.FIRST_PAUSE
            )  # the claim; _retry_later pushes it on
    for attempt_id in due:
        reverse_attempt(services, attempt_id)
    return len(due)
