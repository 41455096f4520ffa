"""Settling payment attempts nobody saw finish: by asking the gateway, never by paying again.

Two ways an attempt is left unresolved: the gateway call timed out (`unknown`), or the worker died
between the call and the commit (still `pending` long after it started). Each is looked up at the
gateway by its idempotency key, with growing pauses between look-ups; found, its result is recorded
as if the call had just returned; not found, nothing was charged and the attempt failed. After
`GIVE_UP_AFTER` the session fails with `outcome_unconfirmed`, and the merchant's webhook says so.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select

from gateways.base import CardDeclined, GatewayError, GatewayOutcomeUnknown, PaymentResult
from payments import logs
from payments.attempts import (
    GatewayUnavailableAfterCheck,
    StartedAttempt,
    attempt_gateway,
    give_up,
    reconcile_once,
    record_result,
    resume_attempt,
)
from payments.backoff import next_pause
from payments.model import UNRESOLVED_ATTEMPT_STATES
from payments.services import Services
from payments.store import PaymentAttempt

log = logging.getLogger(__name__)

GIVE_UP_AFTER = timedelta(hours=24)


def reconcile_due(services: Services, *, limit: int = 20) -> int:
    """Look up every unresolved attempt that is due; returns how many were looked up."""
    now = services.clock()
    with services.db.transaction() as tx:
        due = tx.scalars(
            select(PaymentAttempt)
            .where(
                PaymentAttempt.state.in_(UNRESOLVED_ATTEMPT_STATES),
                PaymentAttempt.next_check_at <= now,
            )
            .order_by(PaymentAttempt.next_check_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        for attempt in due:  # the claim: another worker skips these until the pause is over
            attempt.next_check_at = now + next_pause(attempt.reconcile_checks)
            attempt.reconcile_checks += 1
        claimed = [(attempt.id, attempt.created_at) for attempt in due]
    for attempt_id, created_at in claimed:
        reconcile_attempt(services, attempt_id, give_up_at=created_at + GIVE_UP_AFTER)
    return len(claimed)


def reconcile_attempt(services: Services, attempt_id: int, *, give_up_at: datetime) -> None:
    """One look-up at the gateway; records the answer when there is one."""
    with services.db.transaction() as tx:
        started = resume_attempt(tx, tx.get_one(PaymentAttempt, attempt_id))
    with logs.bound(session_id=started.session_id):
        _look_up(services, attempt_id, started, give_up_at)


def _look_up(
    services: Services, attempt_id: int, started: StartedAttempt, give_up_at: datetime
) -> None:
    unknown = GatewayOutcomeUnknown("the gateway has not confirmed this attempt yet")
    result: PaymentResult | GatewayError
    try:
        result = reconcile_once(attempt_gateway(services, started), started, unknown)
    except (CardDeclined, GatewayUnavailableAfterCheck) as answer:  # declined, or never charged
        result = answer
    except GatewayError:  # still cannot tell (timeout, outage, credentials gone)
        now = services.clock()
        if now >= give_up_at:
            log.warning("attempt %s unconfirmed; giving up", started.look_up.idempotency_key)
            give_up(services, attempt_id, now)
        return
    record_result(services, started, result)
