"""The call's payment job: the card leaves the call for the gateway off the Twilio request.

The confirm webhook calls `start_payment`: it claims `pay:<session>:<attempt>` once in call
state (a webhook Twilio delivers twice, or ten times at once, starts one job), parks the card
there for the job, and submits a `PaymentJob` carrying only the session id, the attempt number
and the CallSid. The job takes the card out of call state (atomically, so it exists once) and
runs `payments.attempts.pay`, whose attempt row is the second, durable guard, and then notes in
call state that the attempt is answered. The result webhook, every second of the caller's hold,
reads the database only once that note is there (or the session ended meanwhile, or the hold is
at its limit): `attempt_result`, one indexed read of the session and the attempt. Before, the
attempt is still with its job and the poll has nothing to read.

A caller who stops holding (the hold limit, a hang-up) leaves the parked card to its job, which
still runs the payment and closes the session; a job that has not taken the card within
`CARD_TTL` never will: the sweep (`ivr.hangup.close_vanished_calls`) destroys the card and fails
the session with `processing_timeout`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, bindparam, select

from gateways.base import Card
from ivr import flow
from ivr.binding import end_call
from ivr.callstate import CALL_TTL, CARD_TTL, CallServices, ParkedPayment
from payments import logs
from payments.attempts import fail_unheard, pay, refuse
from payments.errors import Conflict
from payments.jobs import until_reachable
from payments.model import UNRESOLVED_ATTEMPT_STATES, AttemptState, Status
from payments.services import PaymentJob, Services
from payments.store import PaymentAttempt, PaymentSession
from payments.velocity import VelocityLimited

log = logging.getLogger(__name__)


def start_payment(services: CallServices, job: PaymentJob, card: flow.KeyedCard) -> bool:
    """Hand the card to a new job, once per (session, attempt); False when already started."""
    calls = services.callstates
    # the claim outlives the call, so a late duplicate webhook still finds it
    if not calls.claim(f"pay:{job.session_id}:{job.attempt}", CALL_TTL):
        return False
    until = services.clock() + timedelta(seconds=CARD_TTL)
    calls.park(job.call_sid, ParkedPayment(job.session_id, job.attempt, until), card)
    services.jobs.submit(job)
    return True


def run_payment_job(services: CallServices, job: PaymentJob) -> None:
    """Take the card out of call state, run the attempt, and close the session if the call ended."""
    with logs.bound(session_id=job.session_id):
        _run_payment_job(services, job)


def _run_payment_job(services: CallServices, job: PaymentJob) -> None:
    calls = services.callstates
    # Redis may drop under a running job: its steps wait for it (no longer than the card lives)
    card = until_reachable(
        lambda: calls.take_card(job.call_sid), give_up_after=CARD_TTL, what=job.session_id
    )
    if card is None:  # the call ended or the flow failed first: the card is already gone
        log.info("payment job for session %s attempt %s found no card", job.session_id, job.attempt)
        return
    gateway_card = Card(
        number=card.number,
        exp_month=card.exp_month,
        exp_year=card.exp_year,
        cvc=card.security_code,
    )
    try:
        pay(
            services,
            job.session_id,
            gateway_card,
            postal_code=card.postal_code or None,
            attempt=job.attempt,
        )
    except VelocityLimited as error:  # stopped before the gateway: the caller hears why
        refuse(services, job.session_id, job.attempt, gateway_card, error.message)
    except Conflict as error:
        log.info("payment job for session %s not run: %s", job.session_id, error)
    except Exception as error:
        log.error("payment job for session %s failed: %s", job.session_id, type(error).__name__)
    call = until_reachable(
        lambda: calls.get(job.call_sid), give_up_after=CARD_TTL, what=job.session_id
    )
    if call is None:  # the caller left while the job ran: nobody is there to try another card
        fail_unheard(services, job.session_id, job.attempt)
        with services.db.transaction() as tx:
            end_call(tx, job.call_sid, now=services.clock())
        return
    until_reachable(
        lambda: calls.note_answered(job.call_sid, job.attempt),
        give_up_after=CARD_TTL,
        what=job.session_id,
    )


@dataclass(frozen=True)
class HoldPoll:
    """What one hold poll reads: the session's status and attempt count, and the gateway's answer
    for the attempt as the flow hears it (None while it is still running)."""

    status: Status
    attempt_count: int
    answer: flow.GatewayAnswer | None
    # Where an ended session sends its caller back to, and with what (`ivr.transfer`).
    callback: str | None = None
    memory: str | None = None


# Built once: the poll runs every second of every caller's hold.
_HOLD_POLL = (
    select(
        PaymentSession.status,
        PaymentSession.attempt_count,
        PaymentSession.confirmation_code,
        PaymentAttempt.state,
        PaymentAttempt.error_code,
        PaymentSession.callback,
        PaymentSession.memory,
    )
    .outerjoin(
        PaymentAttempt,
        and_(
            PaymentAttempt.session_id == PaymentSession.id,
            PaymentAttempt.number == bindparam("number"),
        ),
    )
    .where(PaymentSession.id == bindparam("session_id"))
)


def attempt_result(services: Services, session_id: str, number: int) -> HoldPoll:
    """The session and one attempt of it, in one indexed read on a bare connection (a hold poll,
    once there is something to read: `ivr.call`)."""
    with services.db.statements() as connection:
        row = connection.execute(_HOLD_POLL, {"session_id": session_id, "number": number}).one()
    status, attempt_count, confirmation, state, error_code, callback, memory = row
    answer = None  # running, or awaiting reconciliation: the caller keeps holding
    if state == AttemptState.SUCCEEDED:
        answer = flow.GatewayAnswer(approved=True, confirmation=confirmation or "")
    elif state is not None and state not in UNRESOLVED_ATTEMPT_STATES:
        answer = flow.GatewayAnswer(approved=False, decline_code=error_code or "")
    return HoldPoll(Status(status), attempt_count, answer, callback, memory)
