"""After the payment: refunds, captures and voids, each exactly once at the gateway.

A request is checked against the session under its row lock and recorded as a `MoneyOperation`
(state `pending`) before anything is sent; its idempotency key is derived from the session, the
kind and the operation's number, so a refund can never be sent under two keys, nor two refunds
under one. Before a refund is recorded the gateway is asked, read-only, whether it would take it
now (`check_refundable`): Authorize.net and Braintree refund settled payments only, so an
unsettled one is a Conflict naming the void, and a gateway that cannot say is GatewayUnreachable
(a 503: nothing recorded). The job-side answer stays as the backstop: a refund the gateway still
refuses as unsettled when it is sent fails `void_required` and gives its amount back.

The gateway call runs off the request (`JobRunner.operate` -> `run_operation`), which claims the
row (`sending`) so that only one runner ever sends it. A call whose answer is lost
(`GatewayOutcomeUnknown`, or a runner that died mid-call) is never sent again: it is looked up at
the gateway (`find_reversal`), `payments.backoff.next_pause` apart; found, it succeeded; not
there, it failed. After `MAX_LOOK_UPS` look-ups that could not tell (about a day) the sweep stops
asking. The operation may have moved money, so it is never marked failed: it stays `unknown`
(`pending` to the merchant, a refund keeps its amount reserved) with `error.code`
`outcome_unconfirmed` on the API and the dashboard, and a WARNING names its session.

    pending --run_operation--> sending --> succeeded | failed
                                      \\-> unknown --reconcile_operations--> succeeded | failed
                                                   \\--MAX_LOOK_UPS--> unknown, not looked up

Refunds reserve their amount when requested, so two concurrent requests can never add up to more
than was captured; a failed refund gives its amount back. The session keeps its status and gains
`captured_cents`/`captured_at`, `voided_at` and `refunded_cents`. Projects that opted in hear
`refund-succeeded`, `refund-failed`, `payment-captured` and `payment-voided`.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypedDict, cast

from sqlalchemy import func, select
from sqlalchemy.orm import Session as Tx

from gateways.base import (
    GatewayError,
    GatewayOutcomeUnknown,
    NotRefundable,
    PaymentGateway,
    ReversalKind,
    ReversalResult,
)
from payments import logs
from payments.backoff import next_pause
from payments.credentials import project_gateway
from payments.errors import Conflict, GatewayUnreachable, InvalidInput
from payments.model import (
    AttemptState,
    Environment,
    Gateway,
    OperationState,
    PaymentMode,
    Status,
    cents_to_decimal_string,
)
from payments.outbox import record_after_payment
from payments.project_settings import OptInEvent
from payments.services import Services
from payments.sessions import load_session
from payments.store import MoneyOperation, PaymentAttempt, PaymentSession
from payments.views import OperationOut, RefundOut, operation_out, refund_out

log = logging.getLogger(__name__)

REFUND, CAPTURE, VOID = "refund", "capture", "void"
IN_FLIGHT = (OperationState.PENDING, OperationState.SENDING, OperationState.UNKNOWN)
ID_PREFIXES = {REFUND: "rf_", CAPTURE: "cp_", VOID: "vd_"}
# Where Shift4's capture takes no amount (https://dev.shift4.com/docs/api#charge-capture).
WHOLE_CAPTURE_ONLY = frozenset({Gateway.SHIFT4.value})
# Where a captured payment can no longer be voided at all (refund it instead).
VOID_BEFORE_CAPTURE_ONLY = frozenset({Gateway.STRIPE.value, Gateway.SHIFT4.value})
STALE_AFTER_TIMEOUTS = 3
# Look-ups of an operation whose answer was lost, `next_pause` apart: about a day of asking.
MAX_LOOK_UPS = 30
PLAIN_MESSAGES = {
    "void_required": (
        "The gateway refunds only settled payments and this one has not settled yet; "
        "void it instead (POST /v1/sessions/{id}/void)."
    ),
    "not_voidable": "The payment has settled and can no longer be voided; refund it instead.",
    "not_found_at_gateway": "The gateway never received this request; nothing moved.",
    "outcome_unconfirmed": (
        "The gateway has not confirmed whether this went through, and Paydial has stopped asking. "
        "It may have moved money, so it stays pending: look it up in the gateway's console."
    ),
}


class Reach(TypedDict):
    """Whose request this is: a session is reached only within its account and mode."""

    account_id: str
    environment: Environment


def operation_key(session_id: str, kind: str, number: int) -> str:
    """What the gateway sees: one key per session, kind and number (pd-<session>-refund-2)."""
    return f"pd-{session_id}-{kind}-{number}"


def refund(
    services: Services,
    session_id: str,
    reach: Reach,
    *,
    amount_cents: int | None,
    reason: str | None,
) -> RefundOut:
    """Record a refund (all that is left when no amount is given) and send it off the request.

    The gateway is asked first, outside any row lock, whether it would refund the payment now.
    """
    with services.db.transaction() as tx:
        session = load_session(tx, session_id, now=services.clock(), **reach)
        _refund_amount(tx, session, amount_cents)
        where = (session.project_id, session.gateway, session.environment)
        reference = _paid_transaction(tx, session.id)
    _check_refundable(services, where, reference)
    with services.db.transaction() as tx:
        session = _locked(services, tx, session_id, reach)
        amount = _refund_amount(tx, session, amount_cents)  # again: others may have refunded
        operation = _record(services, tx, session, REFUND, amount, reason)
        out = refund_out(operation)
    _submit(services, operation.id)
    return out


def _refund_amount(tx: Tx, session: PaymentSession, amount_cents: int | None) -> int:
    """What the refund will be, or why the session has nothing (or not that much) to refund."""
    _must_have_a_payment(session, "refund")
    if session.captured_cents is None:
        raise Conflict("The payment is authorized but not captured: void it, or capture it first")
    left = session.captured_cents - _committed_refunds(tx, session.id)
    if left <= 0:
        raise Conflict("The payment has already been refunded in full")
    amount = left if amount_cents is None else amount_cents
    if amount > left:
        raise InvalidInput(
            ("body", "amount"),
            f"Refunds may not exceed the captured amount; {cents_to_decimal_string(left)}"
            " is left to refund",
            "refund_exceeds_captured",
        )
    return amount


def _check_refundable(services: Services, where: tuple[str, str, str], reference: str) -> None:
    """A Conflict naming the void while the payment is unsettled (Authorize.net, Braintree);
    GatewayUnreachable when the gateway cannot say, rather than accepting a refund blindly."""
    try:
        project_gateway(services, *where).check_refundable(reference)
    except NotRefundable:
        raise Conflict(PLAIN_MESSAGES["void_required"]) from None
    except GatewayError as error:
        log.warning("refund check at %s went unanswered: %s", where[1], error.code)
        raise GatewayUnreachable(
            f"{where[1]} could not say whether the payment has settled ({error.code}); "
            "no refund was recorded: try again shortly"
        ) from None


def capture(
    services: Services, session_id: str, reach: Reach, *, amount_cents: int | None
) -> OperationOut:
    """Capture an authorization (all of it when no amount is given) off the request."""
    with services.db.transaction() as tx:
        session = _locked(services, tx, session_id, reach)
        _must_have_a_payment(session, "capture")
        if session.status != Status.PAYMENT_AUTHORIZED or session.captured_cents is not None:
            raise Conflict("Only an authorized payment that is not captured yet can be captured")
        _no_operation_in_flight(tx, session.id, CAPTURE, VOID)
        amount = session.amount_cents if amount_cents is None else amount_cents
        if amount > session.amount_cents:
            raise InvalidInput(
                ("body", "amount"),
                f"Captures may not exceed the authorized amount of "
                f"{cents_to_decimal_string(session.amount_cents)}",
                "capture_exceeds_authorized",
            )
        if amount != session.amount_cents and session.gateway in WHOLE_CAPTURE_ONLY:
            raise InvalidInput(
                ("body", "amount"),
                f"{session.gateway} captures the whole authorization only",
                "partial_capture_unsupported",
            )
        operation = _record(services, tx, session, CAPTURE, amount, None)
        out = operation_out(operation)
    _submit(services, operation.id)
    return out


def void(services: Services, session_id: str, reach: Reach) -> OperationOut:
    """Void an authorization or an unsettled charge, in full, off the request."""
    with services.db.transaction() as tx:
        session = _locked(services, tx, session_id, reach)
        _must_have_a_payment(session, "void")
        _no_operation_in_flight(tx, session.id, CAPTURE, VOID, REFUND)
        if session.refunded_cents:
            raise Conflict("The payment has refunds, so it can no longer be voided")
        if session.captured_cents is not None and session.gateway in VOID_BEFORE_CAPTURE_ONLY:
            raise Conflict(
                f"A captured {session.gateway} payment cannot be voided; refund it instead"
            )
        operation = _record(services, tx, session, VOID, None, None)
        out = operation_out(operation)
    _submit(services, operation.id)
    return out


def list_refunds(services: Services, session_id: str, reach: Reach) -> list[RefundOut]:
    with services.db.transaction() as tx:
        session = load_session(tx, session_id, now=services.clock(), **reach)
        return [refund_out(operation) for operation in session.refunds]


def _locked(services: Services, tx: Tx, session_id: str, reach: Reach) -> PaymentSession:
    return load_session(tx, session_id, now=services.clock(), for_update=True, **reach)


def _must_have_a_payment(session: PaymentSession, verb: str) -> None:
    if session.mode == PaymentMode.TOKENIZE:
        raise Conflict(f"A tokenize session saved a card and took no payment to {verb}")
    if session.status not in (Status.PAYMENT_SUCCESS, Status.PAYMENT_AUTHORIZED):
        raise Conflict(f"Session is {session.status}: there is no payment to {verb}")
    if session.voided_at is not None:
        raise Conflict(f"The payment was voided: there is nothing to {verb}")


def _no_operation_in_flight(tx: Tx, session_id: str, *kinds: str) -> None:
    busy = tx.scalar(
        select(MoneyOperation.kind).where(
            MoneyOperation.session_id == session_id,
            MoneyOperation.kind.in_(kinds),
            MoneyOperation.state.in_(IN_FLIGHT),
        )
    )
    if busy is not None:
        raise Conflict(f"A {busy} of this payment is already being processed")


def _committed_refunds(tx: Tx, session_id: str) -> int:
    """Refunded plus reserved: every refund that has not failed."""
    total = tx.scalar(
        select(func.coalesce(func.sum(MoneyOperation.amount_cents), 0)).where(
            MoneyOperation.session_id == session_id,
            MoneyOperation.kind == REFUND,
            MoneyOperation.state != OperationState.FAILED,
        )
    )
    return int(total or 0)


def _record(
    services: Services,
    tx: Tx,
    session: PaymentSession,
    kind: str,
    amount_cents: int | None,
    reason: str | None,
) -> MoneyOperation:
    now = services.clock()
    number = 1 + int(
        tx.scalar(
            select(func.count(MoneyOperation.id)).where(
                MoneyOperation.session_id == session.id, MoneyOperation.kind == kind
            )
        )
        or 0
    )
    operation = MoneyOperation(
        session_id=session.id,
        kind=kind,
        number=number,
        idempotency_key=operation_key(session.id, kind, number),
        public_id=ID_PREFIXES[kind] + secrets.token_hex(12),
        state=OperationState.PENDING,
        amount_cents=amount_cents,
        reason=reason,
        reference=_paid_transaction(tx, session.id),
        created_at=now,
        reconcile_checks=0,
        next_check_at=now + _stale_after(services),  # the sweep's turn if no runner takes it
    )
    tx.add(operation)
    tx.flush()
    session.updated_at = now
    return operation


def _paid_transaction(tx: Tx, session_id: str) -> str:
    reference = tx.scalar(
        select(PaymentAttempt.processor["transaction_id"].as_string()).where(
            PaymentAttempt.session_id == session_id, PaymentAttempt.state == AttemptState.SUCCEEDED
        )
    )
    if not reference:
        raise Conflict("The session's payment has no gateway transaction to act on")
    return str(reference)


def _stale_after(services: Services) -> timedelta:
    return timedelta(seconds=services.settings.gateway_timeout_seconds * STALE_AFTER_TIMEOUTS)


def _submit(services: Services, operation_id: int) -> None:
    """Hand the operation to a runner; if that fails, the sweep runs it once it is due."""
    try:
        services.jobs.operate(operation_id)
    except Exception as error:  # e.g. Redis unreachable: the recorded operation waits
        log.warning("operation %s left for the sweep: %s", operation_id, type(error).__name__)


# --- off the request ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    """What the gateway call needs, read in the claiming transaction."""

    kind: ReversalKind
    key: str
    reference: str
    amount_cents: int | None
    session_id: str
    project_id: str
    gateway: str
    environment: str

    @classmethod
    def of(cls, operation: MoneyOperation, session: PaymentSession) -> Claimed:
        return cls(
            kind=cast(ReversalKind, operation.kind),
            key=operation.idempotency_key,
            reference=operation.reference,
            amount_cents=operation.amount_cents,
            session_id=session.id,
            project_id=session.project_id,
            gateway=session.gateway,
            environment=session.environment,
        )

    def gateway_adapter(self, services: Services) -> PaymentGateway:
        return project_gateway(services, self.project_id, self.gateway, self.environment)

    def look_up(self, services: Services) -> ReversalResult | None:
        """The gateway's record of this operation (None: it has none)."""
        return self.gateway_adapter(services).find_reversal(
            self.kind, self.reference, idempotency_key=self.key
        )


def run_operation(services: Services, operation_id: int) -> None:
    """The runner's job: claim the pending operation, call the gateway once, record the answer."""
    claimed = _claim(services, operation_id)
    if claimed is None:  # another runner has it, or it is done
        return
    with logs.bound(session_id=claimed.session_id):
        try:
            result: ReversalResult | GatewayError | None = _send(
                claimed.gateway_adapter(services), claimed
            )
        except GatewayOutcomeUnknown:
            result = _look_up_once(services, claimed)
        except GatewayError as error:
            result = error
        _finish(services, operation_id, result)


def _claim(services: Services, operation_id: int) -> Claimed | None:
    now = services.clock()
    with services.db.transaction() as tx:
        operation = tx.get_one(MoneyOperation, operation_id, with_for_update=True)
        if operation.state != OperationState.PENDING:
            return None
        session = tx.get_one(PaymentSession, operation.session_id)
        operation.state = OperationState.SENDING
        operation.next_check_at = now + _stale_after(services)  # a dead runner gets looked up
        return Claimed.of(operation, session)


def _send(gateway: PaymentGateway, claimed: Claimed) -> ReversalResult:
    if claimed.kind == VOID:
        return gateway.void(claimed.reference, idempotency_key=claimed.key)
    assert claimed.amount_cents is not None  # refunds and captures always carry one
    if claimed.kind == CAPTURE:
        return gateway.capture(claimed.reference, claimed.amount_cents, idempotency_key=claimed.key)
    return gateway.refund(claimed.reference, claimed.amount_cents, idempotency_key=claimed.key)


def _look_up_once(services: Services, claimed: Claimed) -> ReversalResult | None:
    """Right after a lost answer: the gateway's record, or None while it cannot say."""
    try:
        return claimed.look_up(services)
    except GatewayError:
        return None


def _finish(
    services: Services, operation_id: int, result: ReversalResult | GatewayError | None
) -> None:
    """Record the gateway's answer; None means it is unknown for now (reconcile_operations)."""
    now = services.clock()
    with services.db.transaction() as tx:
        operation = tx.get_one(MoneyOperation, operation_id, with_for_update=True)
        if operation.state not in (
            OperationState.SENDING,
            OperationState.UNKNOWN,
        ):  # another look-up recorded it first
            return
        session = tx.get_one(PaymentSession, operation.session_id, with_for_update=True)
        if result is None:
            operation.state = OperationState.UNKNOWN
            operation.next_check_at = now + next_pause(operation.reconcile_checks)
            return
        operation.finished_at, operation.next_check_at = now, None
        if isinstance(result, GatewayError):
            operation.state = OperationState.FAILED
            operation.error_code = result.code
            operation.error_message = PLAIN_MESSAGES.get(result.code, result.message[:500])
            log.warning("%s %s failed: %s", operation.kind, operation.public_id, result.code)
        else:
            operation.state = OperationState.SUCCEEDED
            operation.gateway_id = result.reversal_id
            _apply(session, operation, now)
        session.updated_at = now
        tx.expire(session, ["refunds"])
        event = _event(operation)
        if event is not None:
            body = refund_out(operation) if operation.kind == REFUND else operation_out(operation)
            record_after_payment(
                tx, session, event, now, {operation.kind: body.model_dump(mode="json")}
            )


def _apply(session: PaymentSession, operation: MoneyOperation, now: datetime) -> None:
    """What a succeeded operation changes on the session (its status stays)."""
    if operation.kind == REFUND:
        session.refunded_cents = (session.refunded_cents or 0) + (operation.amount_cents or 0)
    elif operation.kind == CAPTURE:
        session.captured_cents, session.captured_at = operation.amount_cents, now
    else:
        session.voided_at = now


def _event(operation: MoneyOperation) -> OptInEvent | None:
    if operation.kind == REFUND:
        ok = operation.state == OperationState.SUCCEEDED
        return OptInEvent.REFUND_SUCCEEDED if ok else OptInEvent.REFUND_FAILED
    if operation.state != OperationState.SUCCEEDED:
        return None
    return OptInEvent.PAYMENT_CAPTURED if operation.kind == CAPTURE else OptInEvent.PAYMENT_VOIDED


def reconcile_operations(services: Services, *, limit: int = 20) -> int:
    """The sweep: run operations no runner took, look up those whose answer was lost.

    A lost answer is never re-sent: found at the gateway, it succeeded; not there, it failed.
    """
    now = services.clock()
    with services.db.transaction() as tx:
        due = tx.scalars(
            select(MoneyOperation)
            .where(MoneyOperation.state.in_(IN_FLIGHT), MoneyOperation.next_check_at <= now)
            .order_by(MoneyOperation.next_check_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        work = []
        for operation in due:
            if (
                operation.state == OperationState.SENDING
            ):  # its runner died mid-call: look it up from now on
                operation.state = OperationState.UNKNOWN
            if (
                operation.state == OperationState.UNKNOWN
            ):  # the claim: others skip it until the pause is over
                operation.next_check_at = now + next_pause(operation.reconcile_checks)
                operation.reconcile_checks += 1
            work.append((operation.id, operation.state, operation.reconcile_checks))
    for operation_id, state, checks in work:
        if state == OperationState.PENDING:
            run_operation(services, operation_id)
        else:
            _reconcile(services, operation_id, last=checks >= MAX_LOOK_UPS)
    return len(work)


def _reconcile(services: Services, operation_id: int, *, last: bool) -> None:
    with services.db.transaction() as tx:
        operation = tx.get_one(MoneyOperation, operation_id)
        session = tx.get_one(PaymentSession, operation.session_id)
        claimed = Claimed.of(operation, session)
    with logs.bound(session_id=claimed.session_id):
        try:
            found = claimed.look_up(services)
        except GatewayError as error:  # still cannot tell: try again after the pause
            log.info("operation %s not confirmed yet: %s", claimed.key, error.code)
            if last:
                _stop_looking(services, operation_id)
            return
        _finish(services, operation_id, found if found is not None else NeverReceived())


def _stop_looking(services: Services, operation_id: int) -> None:
    """The last look-up could not tell either: stay `pending`, say so, and look no more."""
    with services.db.transaction() as tx:
        operation = tx.get_one(MoneyOperation, operation_id, with_for_update=True)
        if operation.state != OperationState.UNKNOWN:  # another look-up recorded an answer
            return
        operation.next_check_at = None
        operation.error_code = "outcome_unconfirmed"
        operation.error_message = PLAIN_MESSAGES["outcome_unconfirmed"]
        session_id, public_id = operation.session_id, operation.public_id
        kind, checks = operation.kind, operation.reconcile_checks
    with logs.bound(session_id=session_id):
        log.warning(
            "%s %s of session %s unconfirmed after %d look-ups; no more automatic look-ups",
            kind,
            public_id,
            session_id,
            checks,
        )


class NeverReceived(GatewayError):
    """The gateway has no record of an operation whose answer was lost: nothing moved."""

    code = "not_found_at_gateway"

    def __init__(self) -> None:
        super().__init__(PLAIN_MESSAGES["not_found_at_gateway"])
