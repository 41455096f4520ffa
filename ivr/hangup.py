"""A call that ended closes its session, even when a store was down as Twilio said so.

Twilio sends a call's `completed` status callback once: by default it retries only a request
that could not connect or timed out, never an answer it received
(twilio.com/docs/usage/webhooks/webhooks-connection-overrides), so "try later" loses it.
`call_ended` therefore does its two parts independently: destroy the call's state in Redis, and
abandon the open session in the database. When one store is down its part is missed, and the
sweep `close_vanished_calls` finishes the job: a bound, open session whose call state is gone
(deleted by the callback, or expired because no webhook came within its TTL) has no call left,
so it ends `abandoned` at once rather than when its time runs out (a used session times out
`abandoned` too, never `expired`: payments.sessions).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from ivr.binding import end_call
from ivr.charge import callstates_of
from payments.model import Channel, Status
from payments.services import Services
from payments.store import PaymentSession

log = logging.getLogger(__name__)

# Binding commits a moment before the call's state is first written: a session bound this
# recently may not have state yet, and is left for the next sweep.
GRACE = timedelta(minutes=1)


def call_ended(services: Services, call_sid: str) -> None:
    """Twilio says the call is over: destroy its card state, abandon its open session."""
    try:
        callstates_of(services).delete(call_sid)
    except RedisError as error:  # the state expires there; the sweep closes the session then
        log.error("call %s ended, call state unreachable: %s", call_sid, type(error).__name__)
    try:
        with services.db.transaction() as tx:
            end_call(tx, call_sid, now=services.clock())
    except SQLAlchemyError as error:  # its state is gone (or going): the sweep closes it
        log.error("call %s ended, database unreachable: %s", call_sid, type(error).__name__)


def close_vanished_calls(services: Services, *, limit: int = 500) -> int:
    """The sweep: abandon open sessions whose call left no state behind; returns how many."""
    calls = callstates_of(services)
    now = services.clock()
    closed = 0
    with services.db.transaction() as tx:
        bound = tx.scalars(
            select(PaymentSession.call_sid)
            .where(
                PaymentSession.status == Status.COLLECTING.value,
                PaymentSession.channel == Channel.VOICE.value,
                PaymentSession.call_sid.is_not(None),
                PaymentSession.updated_at <= now - GRACE,
            )
            .limit(limit)
        ).all()
    for call_sid in bound:
        if call_sid is None or calls.is_live(call_sid):
            continue
        with services.db.transaction() as tx:
            session = end_call(tx, call_sid, now=now)
            closed += session is not None and session.status == Status.ABANDONED.value
    return closed
