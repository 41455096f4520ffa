"""One payment attempt: a durable record first, then the gateway, then the result, exactly once.

The attempt row (keyed by session and attempt number) is committed before the gateway is called,
and its idempotency key is what the gateway sees, so a repeated request for the same attempt never
moves money twice: it returns the recorded outcome, or Conflict while the first is still running.
An attempt whose outcome is unknown (the gateway timed out, or the worker died mid-call) holds the
session open and blocks further attempts until `payments.reconcile` has looked it up at the gateway.
Failed attempts count against the caller and the card across sessions (`payments.velocity`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as Tx

from gateways.base import (
    Card,
    CardDeclined,
    CardholderAddress,
    GatewayConfigurationError,
    GatewayError,
    GatewayOutcomeUnknown,
    LookUp,
    PaymentGateway,
    PaymentRequest,
    PaymentResult,
)
from gateways.cards import UNKNOWN_BRAND
from payments import backoff, velocity
from payments.credentials import gateway_with, project_credentials, project_gateway
from payments.errors import Conflict
from payments.model import UNRESOLVED_ATTEMPT_STATES, AttemptState, PaymentMode, Status
from payments.project_settings import ProjectSettings, project_settings
from payments.reversals import REVERSED_CODE, REVERSED_MESSAGE, reverse_attempt
from payments.services import Services
from payments.sessions import load_session, load_session_and_project, transition
from payments.store import PaymentAttempt, PaymentSession, Project, SessionEvent

PLAIN_MESSAGES = {
    "card_declined": "The card was declined.",
    "insufficient_funds": "The card has insufficient funds.",
    "incorrect_cvc": "The security code is incorrect.",
    "expired_card": "The card has expired.",
    "incorrect_zip": "The billing ZIP code does not match.",
    "invalid_number": "The card number is invalid.",
    "processing_error": "The payment could not be processed.",
    "gateway_unavailable": "The payment processor could not be reached.",
    "gateway_configuration": "The payment processor is not configured correctly.",
    "outcome_unknown": "The payment processor did not confirm the payment; it is being checked.",
    "processing_timeout": (
        "The payment could not be started before the card details expired; nothing was charged."
    ),
    "outcome_unconfirmed": (
        "The payment processor never confirmed whether the payment went through; "
        "check the gateway's dashboard before charging again."
    ),
}
# An attempt still pending this long after it started lost its worker: reconcile it.
STALE_AFTER_TIMEOUTS = 3


@dataclass(frozen=True)
class PaymentOutcome:
    """What a channel needs to tell the payer after one attempt."""

    status: Status
    approved: bool
    amount_cents: int
    currency: str
    attempts_remaining: int
    transaction_id: str | None = None
    confirmation_code: str | None = None  # the payer's, on success
    card_brand: str | None = None
    card_last4: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    declined: bool = False  # the card was declined (not a gateway error): card testing's mark


def attempt_key(session_id: str, number: int) -> str:
    return f"pd-{session_id}-{number}"


Operation = Literal["charge", "authorize", "tokenize"]


@dataclass(frozen=True)
class StartedAttempt:
    """A pending attempt: whom to ask, what for, and how to find it again; never the card."""

    session_id: str
    number: int
    project_id: str
    gateway: str
    environment: str
    operation: Operation
    look_up: LookUp
    caller: str | None = None
    card_key: str | None = None  # keyed HMAC of the card number, for the velocity counters


def pay(
    services: Services,
    session_id: str,
    card: Card,
    *,
    postal_code: str | None = None,
    attempt: int | None = None,
) -> PaymentOutcome:
    """Run one payment attempt for a session (the next one when `attempt` is None)."""
    start = _start(services, session_id, card, postal_code, attempt)
    if isinstance(start, PaymentOutcome):
        return start
    started, request, credentials = start
    try:
        gateway = gateway_with(services, started.gateway, started.environment, credentials)
        result: PaymentResult | GatewayError = _call_gateway(gateway, started, request)
    except GatewayError as error:
        result = error
    return record_result(services, started, result)


def _start(
    services: Services, session_id: str, card: Card, postal_code: str | None, attempt: int | None
) -> tuple[StartedAttempt, PaymentRequest, dict[str, str] | None] | PaymentOutcome:
    """Record the attempt as pending in its own transaction, or return the recorded outcome.

    The project's credentials for the gateway are read in the same transaction.
    """
    now = services.clock()
    with services.db.transaction() as tx:
        session, project = load_session_and_project(tx, session_id, now=now, for_update=True)
        settings = project_settings(project)
        number = attempt if attempt is not None else session.attempt_count + 1
        existing, unresolved = _this_or_unresolved(tx, session.id, number)
        if existing is not None:
            if existing.state == AttemptState.PENDING:
                raise Conflict("This payment attempt is already being processed")
            return _outcome(session, existing, settings.max_payment_attempts)
        if Status(session.status).is_terminal:
            raise Conflict(f"Session is {session.status}")
        if unresolved:
            raise Conflict("The previous payment attempt is still being confirmed")
        if number != session.attempt_count + 1 or number > settings.max_payment_attempts:
            raise Conflict("No payment attempts remain for this session")
        card_key = velocity.services_card_key(services, card.number)
        velocity.check(tx, services, caller=session.caller, card=card_key, now=now)
        if session.status == Status.PENDING:
            transition(tx, session, Status.COLLECTING, cause="payment_started", now=now)
        session.attempt_count = number
        session.updated_at = now
        key = attempt_key(session.id, number)
        stale_after = timedelta(
            seconds=services.settings.gateway_timeout_seconds * STALE_AFTER_TIMEOUTS
        )
        tx.add(
            PaymentAttempt(
                session_id=session.id,
                number=number,
                idempotency_key=key,
                state=AttemptState.PENDING,
                card_brand=card.brand,
                card_last4=card.last4,
                created_at=now,
                reconcile_checks=0,
                next_check_at=now + stale_after,
            )
        )
        try:  # SQLite ignores FOR UPDATE: a start of this attempt may have committed since we read
            tx.flush()
        except IntegrityError:
            raise Conflict("This payment attempt is already being processed") from None
        request = _request(session, key, card, postal_code)
        started = _started(session, project.id, settings, number, request.as_look_up(), card_key)
        credentials = project_credentials(
            services, tx, project.id, session.gateway, session.environment
        )
        return started, request, credentials


def _request(
    session: PaymentSession, key: str, card: Card, postal_code: str | None
) -> PaymentRequest:
    billing = CardholderAddress(**session.billing_address) if session.billing_address else None
    return PaymentRequest(
        amount_cents=session.amount_cents,
        currency=session.currency,
        card=card,
        idempotency_key=key,
        description=session.description,
        billing_address=billing,
        postal_code=postal_code,
        session_id=session.id,
    )


def _started(
    session: PaymentSession,
    project_id: str,
    settings: ProjectSettings,
    number: int,
    look_up: LookUp,
    card_key: str | None,
) -> StartedAttempt:
    operation: Operation
    if session.mode == PaymentMode.TOKENIZE:
        operation = "tokenize"
    elif settings.authorize_only:  # captured later through payments.refunds
        operation = "authorize"
    else:
        operation = "charge"
    return StartedAttempt(
        session_id=session.id,
        number=number,
        project_id=project_id,
        gateway=session.gateway,
        environment=session.environment,
        operation=operation,
        look_up=look_up,
        caller=session.caller,
        card_key=card_key,
    )


def resume_attempt(tx: Tx, attempt: PaymentAttempt) -> StartedAttempt:
    """An unresolved attempt, for a gateway look-up by its key, brand and last four (the card
    itself is long gone, and reconciling needs none of it)."""
    session = tx.get_one(PaymentSession, attempt.session_id)
    project = tx.get_one(Project, session.project_id)
    look_up = LookUp(
        idempotency_key=attempt.idempotency_key,
        amount_cents=session.amount_cents,
        card_brand=attempt.card_brand or UNKNOWN_BRAND,
        card_last4=attempt.card_last4 or "",
    )
    return _started(session, project.id, project_settings(project), attempt.number, look_up, None)


def _this_or_unresolved(tx: Tx, session_id: str, number: int) -> tuple[PaymentAttempt | None, bool]:
    """The session's attempt `number` if it exists, and whether any attempt awaits its outcome:
    one read of the session's attempts."""
    rows = tx.scalars(
        select(PaymentAttempt).where(
            PaymentAttempt.session_id == session_id,
            or_(
                PaymentAttempt.number == number,
                PaymentAttempt.state.in_(UNRESOLVED_ATTEMPT_STATES),
            ),
        )
    ).all()
    this = next((row for row in rows if row.number == number), None)
    return this, any(row.state in UNRESOLVED_ATTEMPT_STATES for row in rows)


def _attempt_row(tx: Tx, session_id: str, number: int) -> PaymentAttempt | None:
    return tx.scalar(
        select(PaymentAttempt).where(
            PaymentAttempt.session_id == session_id, PaymentAttempt.number == number
        )
    )


def attempt_gateway(services: Services, started: StartedAttempt) -> PaymentGateway:
    """The project's adapter for this attempt's gateway and mode."""
    return project_gateway(services, started.project_id, started.gateway, started.environment)


def _call_gateway(
    gateway: PaymentGateway, started: StartedAttempt, request: PaymentRequest
) -> PaymentResult:
    try:
        return _send(gateway, started.operation, request)
    except GatewayOutcomeUnknown as unknown:
        # One look-up at once; payments.reconcile keeps looking when this one can't tell either.
        return reconcile_once(gateway, started, unknown)


def _send(gateway: PaymentGateway, operation: Operation, request: PaymentRequest) -> PaymentResult:
    match operation:
        case "charge":
            return gateway.charge(request)
        case "authorize":
            return gateway.authorize(request)
        case "tokenize":
            return gateway.tokenize(request)


def reconcile_once(
    gateway: PaymentGateway, started: StartedAttempt, unknown: GatewayOutcomeUnknown
) -> PaymentResult:
    """The gateway's record of an attempt; raises `unknown` again while it cannot say.

    Found: its result (or its decline). Not found: nothing was charged, so the attempt failed.
    """
    try:
        reconciled = gateway.reconcile(started.look_up)
    except CardDeclined:
        raise
    except GatewayError:
        raise unknown from None
    if reconciled is None:
        raise GatewayUnavailableAfterCheck()
    return reconciled


class GatewayUnavailableAfterCheck(GatewayError):
    """The call timed out, and the gateway confirmed it has no such payment."""

    def __init__(self) -> None:
        super().__init__(
            code="gateway_unavailable",
            message=PLAIN_MESSAGES["gateway_unavailable"],
            retryable=True,
        )


def record_result(
    services: Services, started: StartedAttempt, result: PaymentResult | GatewayError
) -> PaymentOutcome:
    """Record the gateway's answer and move the session on, in one transaction, exactly once.

    A payment that lands on a session that already ended is given back at once (payments.reversals).
    """
    outcome, reversing = _record_result(services, started, result)
    if reversing is not None:
        reverse_attempt(services, reversing)
    return outcome


def _record_result(
    services: Services, started: StartedAttempt, result: PaymentResult | GatewayError
) -> tuple[PaymentOutcome, int | None]:
    now = services.clock()
    with services.db.transaction() as tx:
        session, project = load_session_and_project(
            tx, started.session_id, now=now, for_update=True
        )
        max_attempts = project_settings(project).max_payment_attempts
        attempt = _attempt_row(tx, session.id, started.number)
        assert attempt is not None  # written by _start, never deleted
        if attempt.state not in UNRESOLVED_ATTEMPT_STATES:  # a racing worker or reconciler won
            return _outcome(session, attempt, max_attempts), None
        attempt.finished_at = now
        attempt.next_check_at = None
        if isinstance(result, PaymentResult) and _too_late(session, result):
            _mark_for_reversal(tx, session, attempt, result, now)
            return _outcome(session, attempt, max_attempts), attempt.id
        if isinstance(result, PaymentResult):
            attempt.state = AttemptState.SUCCEEDED
            attempt.processor = {"transaction_id": result.transaction_id, **result.processor}
            session.card_brand, session.card_last4 = result.card_brand, result.card_last4
            session.processor = dict(result.processor)
            session.error_code = session.error_message = None
            authorized = result.outcome == "authorized"
            if result.outcome == "captured":
                session.captured_cents, session.captured_at = session.amount_cents, now
            to: Status | None = Status.PAYMENT_AUTHORIZED if authorized else Status.PAYMENT_SUCCESS
            cause = "payment_approved"
        else:
            code = _error_code(result)
            attempt.state = (
                AttemptState.UNKNOWN
                if isinstance(result, GatewayOutcomeUnknown)
                else (
                    AttemptState.DECLINED
                    if isinstance(result, CardDeclined)
                    else AttemptState.FAILED
                )
            )
            attempt.error_code = code
            attempt.error_message = PLAIN_MESSAGES.get(code, PLAIN_MESSAGES["processing_error"])
            session.card_brand, session.card_last4 = attempt.card_brand, attempt.card_last4
            session.error_code, session.error_message = attempt.error_code, attempt.error_message
            if attempt.state == AttemptState.UNKNOWN:
                attempt.finished_at = None
                attempt.next_check_at = now  # the session waits open for payments.reconcile
            elif attempt.state == AttemptState.DECLINED:
                velocity.record_failure(
                    tx,
                    caller=started.caller,
                    card=started.card_key,
                    environment=started.environment,
                    now=now,
                )
            out_of_attempts = session.attempt_count >= max_attempts
            to = (
                Status.PAYMENT_FAILED
                if out_of_attempts and attempt.state != AttemptState.UNKNOWN
                else None
            )
            cause = "payment_" + attempt.state
        session.updated_at = now
        if to is not None and not Status(session.status).is_terminal:
            transition(
                tx,
                session,
                to,
                cause=cause,
                now=now,
                detail={"attempt": started.number, "error_code": attempt.error_code},
            )
        return _outcome(session, attempt, max_attempts), None


def _too_late(session: PaymentSession, result: PaymentResult) -> bool:
    """Money moved for a session that already ended (a saved card moves none)."""
    return Status(session.status).is_terminal and result.outcome != "tokenized"


def _mark_for_reversal(
    tx: Tx, session: PaymentSession, attempt: PaymentAttempt, result: PaymentResult, now: datetime
) -> None:
    """Keep the gateway's ids for the reversal and log the late payment; the status stays."""
    attempt.state = AttemptState.REVERSING
    attempt.processor = {"transaction_id": result.transaction_id, **result.processor}
    attempt.error_code, attempt.error_message = REVERSED_CODE, REVERSED_MESSAGE
    attempt.next_check_at = now + backoff.FIRST_PAUSE  # the sweep's turn if reversing fails
    tx.add(
        SessionEvent(
            session_id=session.id,
            at=now,
            from_status=session.status,
            to_status=session.status,
            cause="late_payment_received",
            detail={"attempt": attempt.number, "transaction_id": result.transaction_id},
        )
    )


def refuse(services: Services, session_id: str, number: int, card: Card, reason: str) -> None:
    """Record an attempt the velocity limits stopped before the gateway, so the call can say why."""
    now = services.clock()
    with services.db.transaction() as tx:
        session = load_session(tx, session_id, now=now, for_update=True)
        if Status(session.status).is_terminal or _attempt_row(tx, session.id, number) is not None:
            return
        max_attempts = project_settings(
            tx.get_one(Project, session.project_id)
        ).max_payment_attempts
        _record_unsent(
            tx,
            session,
            number,
            (AttemptState.DECLINED, "velocity_limited", reason),
            card=card,
            now=now,
            fail_as="payment_refused" if number >= max_attempts else None,
        )


def time_out(services: Services, session_id: str, number: int) -> bool:
    """Fail a payment whose job never took its card in time: `processing_timeout`, no money moved.

    The attempt is recorded as failed, so a job that turns up later finds its outcome and never
    reaches the gateway. False when the attempt ran after all or the session had already ended.
    """
    now = services.clock()
    with services.db.transaction() as tx:
        session = load_session(tx, session_id, now=now, for_update=True)
        if Status(session.status).is_terminal or _attempt_row(tx, session.id, number) is not None:
            return False
        failed = (AttemptState.FAILED, "processing_timeout", PLAIN_MESSAGES["processing_timeout"])
        _record_unsent(tx, session, number, failed, card=None, now=now, fail_as="payment_timed_out")
        return True


def fail_unheard(services: Services, session_id: str, number: int) -> None:
    """An attempt that failed after its payer left ends the session `payment-failed` with its
    error, attempts left or not: nobody is there to try another card, and the merchant is told."""
    now = services.clock()
    with services.db.transaction() as tx:
        session = load_session(tx, session_id, now=now, for_update=True)
        attempt = _attempt_row(tx, session.id, number)
        if Status(session.status).is_terminal or attempt is None:
            return
        if attempt.state in (AttemptState.DECLINED, AttemptState.FAILED):
            transition(
                tx,
                session,
                Status.PAYMENT_FAILED,
                cause="payment_failed_payer_gone",
                now=now,
                detail={"attempt": number, "error_code": attempt.error_code},
            )


def attempt_recorded(tx: Tx, session_id: str, number: int) -> bool:
    """Whether this attempt has its row: its job started it (or it was refused or timed out)."""
    return _attempt_row(tx, session_id, number) is not None


def _record_unsent(
    tx: Tx,
    session: PaymentSession,
    number: int,
    result: tuple[AttemptState, str, str],
    *,
    card: Card | None,
    now: datetime,
    fail_as: str | None,
) -> None:
    """An attempt that never reached the gateway: its row and the session's error; the session
    fails (with `fail_as` as the cause) when it is given."""
    state, code, message = result
    session.attempt_count = number
    session.error_code, session.error_message = code, message
    session.updated_at = now
    tx.add(
        PaymentAttempt(
            session_id=session.id,
            number=number,
            idempotency_key=attempt_key(session.id, number),
            state=state,
            card_brand=card.brand if card else None,
            card_last4=card.last4 if card else None,
            error_code=code,
            error_message=message,
            created_at=now,
            finished_at=now,
            reconcile_checks=0,
        )
    )
    if fail_as is not None:
        transition(
            tx,
            session,
            Status.PAYMENT_FAILED,
            cause=fail_as,
            now=now,
            detail={"attempt": number, "error_code": code},
        )


def _error_code(error: GatewayError) -> str:
    if isinstance(error, CardDeclined):
        return error.reason
    if isinstance(error, GatewayOutcomeUnknown):
        return "outcome_unknown"
    if isinstance(error, GatewayConfigurationError):
        return "gateway_configuration"
    if error.retryable:
        return "gateway_unavailable"
    return "processing_error"


def give_up(services: Services, attempt_id: int, now: datetime) -> None:
    """Reconciliation ran out of time: fail the session and tell the merchant it is unconfirmed."""
    with services.db.transaction() as tx:
        attempt = tx.get_one(PaymentAttempt, attempt_id, with_for_update=True)
        if attempt.state not in UNRESOLVED_ATTEMPT_STATES:
            return
        attempt.state, attempt.finished_at, attempt.next_check_at = AttemptState.UNKNOWN, now, None
        attempt.error_code = "outcome_unconfirmed"
        attempt.error_message = PLAIN_MESSAGES["outcome_unconfirmed"]
        session = load_session(tx, attempt.session_id, now=now, for_update=True)
        if Status(session.status).is_terminal:
            return
        session.error_code, session.error_message = attempt.error_code, attempt.error_message
        transition(
            tx,
            session,
            Status.PAYMENT_FAILED,
            cause="payment_unconfirmed",
            now=now,
            detail={"attempt": attempt.number, "error_code": attempt.error_code},
        )


def _outcome(session: PaymentSession, attempt: PaymentAttempt, max_attempts: int) -> PaymentOutcome:
    processor = attempt.processor or {}
    terminal = Status(session.status).is_terminal or attempt.state == AttemptState.UNKNOWN
    return PaymentOutcome(
        status=Status(session.status),
        approved=attempt.state == AttemptState.SUCCEEDED,
        amount_cents=session.amount_cents,
        currency=session.currency,
        attempts_remaining=0 if terminal else max(0, max_attempts - session.attempt_count),
        transaction_id=processor.get("transaction_id"),
        confirmation_code=session.confirmation_code
        if attempt.state == AttemptState.SUCCEEDED
        else None,
        card_brand=attempt.card_brand,
        card_last4=attempt.card_last4,
        error_code=attempt.error_code,
        error_message=attempt.error_message,
        declined=attempt.state == AttemptState.DECLINED,
    )
