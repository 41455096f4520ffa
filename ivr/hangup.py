"""A call that ended closes its session, even when a store was down as Twilio said so.

Twilio sends a call's `completed` status callback once: by default it retries only a request
that could not connect or timed out, never an answer it received
(twilio.com/docs/usage/webhooks/webhooks-connection-overrides), so "try later" loses it.
`call_ended` therefore does its two parts independently: destroy the call's state in Redis, and
abandon the open session in the database. When one store is down its part is missed, and the
sweep `close_vanished_calls` finishes the job: a bound, open session whose call state is gone
(deleted by the callback, or expired because no webhook came within its TTL) has no call left,
so it ends `abandoned` at once rather than when its time runs out (a used session times out
`abandoned` too, never `expired`: payments.sessions). A call whose session already ended (paid,
failed, cancelled) needs no database at all: the transaction that ended it left a note in call
state (`CallStates.note_session_ended`), which outlives the flow's own state; without the note (a
Redis failover lost it) the session is read and, being terminal, left as it is.

A call that ends while its payment job has not started yet leaves the session to that job: the
card stays parked for it (`CallStates.close`), and the job records the result and closes the
session. Once the card's time (`ivr.callstate.CARD_TTL`) is up with no job, the sweep destroys
the card and fails the session with `processing_timeout`, so a job that comes later charges
nothing; the merchant hears of it like of any failed payment.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from ivr.binding import end_call
from ivr.callstate import CallServices, ClosedCall, ParkedPayment
from payments.attempts import attempt_recorded, time_out
from payments.model import Channel, Status
from payments.store import PaymentSession

log = logging.getLogger(__name__)

# Binding commits a moment before the call's state is first written: a session bound this
# recently may not have state yet, and is left for the next sweep.
GRACE = timedelta(minutes=1)


def call_ended(services: CallServices, call_sid: str) -> None:
    """Twilio says the call is over: destroy its state, abandon its open session (unless a card
    handed to a payment job still waits for it). A session noted as ended needs no database."""
    closed = ClosedCall(payment=None, session_ended=False)  # all an unreachable store can say
    try:
        closed = services.callstates.close(call_sid)
    except RedisError as error:  # the state expires there; the sweep closes the session then
        log.error("call %s ended, call state unreachable: %s", call_sid, type(error).__name__)
    if closed.session_ended and closed.payment is None:
        return
    try:
        _close_session(services, call_sid, closed.payment)
    except SQLAlchemyError as error:  # its state is gone (or going): the sweep closes it
        log.error("call %s ended, database unreachable: %s", call_sid, type(error).__name__)


def _close_session(
    services: CallServices, call_sid: str, parked: ParkedPayment | None
) -> PaymentSession | None:
    """Abandon the session of a call that is over, except while its parked payment may still run;
    a parked payment past its time is timed out instead (None: the session stays open)."""
    now = services.clock()
    if parked is not None and now >= parked.until:
        services.callstates.take_card(call_sid)  # a job that turns up now finds no card
        time_out(services, parked.session_id, parked.attempt)  # unless its job got there first
    with services.db.transaction() as tx:
        if parked is not None and not attempt_recorded(tx, parked.session_id, parked.attempt):
            return None  # its job has the card, or is yet to take it: the job ends the session
        return end_call(tx, call_sid, now=now)


def close_vanished_calls(services: CallServices, *, limit: int = 500) -> int:
    """The sweep: abandon open sessions whose call left no state behind, and time out payments
    whose card waited for a job in vain; returns how many sessions it abandoned."""
    calls = services.callstates
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
        session = _close_session(services, call_sid, calls.payment(call_sid))
        closed += session is not None and session.status == Status.ABANDONED.value
    return closed
