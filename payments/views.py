"""The session as the outside world sees it: one serializer for the API and the webhooks."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from payments.model import OperationState, Status, cents_to_decimal_string
from payments.store import MoneyOperation, PaymentSession

PublicStatus = Literal["pending", "succeeded", "failed"]


def public_status(state: str) -> PublicStatus:
    """An operation as the merchant sees it: in flight, however it is, reads `pending`."""
    if state == OperationState.SUCCEEDED:
        return "succeeded"
    return "failed" if state == OperationState.FAILED else "pending"


def _dollars(cents: int | None) -> str | None:
    return None if cents is None else cents_to_decimal_string(cents)


class ErrorInfo(BaseModel):
    code: str
    message: str


class RefundOut(BaseModel):
    """A refund of a session's payment (payments.refunds)."""

    refund_id: str
    session_id: str
    amount: str
    status: PublicStatus
    reason: str | None
    transaction_id: str = Field(description="The gateway's payment that is refunded")
    gateway_refund_id: str | None = Field(description="The gateway's id for the refund")
    error: ErrorInfo | None
    created_at: datetime
    completed_at: datetime | None


class OperationOut(BaseModel):
    """A capture or void of a session's payment; the session shows its effect once it succeeds."""

    operation_id: str
    session_id: str
    kind: Literal["capture", "void"]
    amount: str | None
    status: PublicStatus
    transaction_id: str
    error: ErrorInfo | None
    created_at: datetime
    completed_at: datetime | None


def _error(operation: MoneyOperation) -> ErrorInfo | None:
    if operation.state != OperationState.FAILED or not operation.error_code:
        return None
    return ErrorInfo(code=operation.error_code, message=operation.error_message or "")


def refund_out(operation: MoneyOperation) -> RefundOut:
    return RefundOut(
        refund_id=operation.public_id,
        session_id=operation.session_id,
        amount=cents_to_decimal_string(operation.amount_cents or 0),
        status=public_status(operation.state),
        reason=operation.reason,
        transaction_id=operation.reference,
        gateway_refund_id=operation.gateway_id,
        error=_error(operation),
        created_at=operation.created_at,
        completed_at=operation.finished_at,
    )


def operation_out(operation: MoneyOperation) -> OperationOut:
    return OperationOut(
        operation_id=operation.public_id,
        session_id=operation.session_id,
        kind=operation.kind,
        amount=_dollars(operation.amount_cents),
        status=public_status(operation.state),
        transaction_id=operation.reference,
        error=_error(operation),
        created_at=operation.created_at,
        completed_at=operation.finished_at,
    )


class SessionOut(BaseModel):
    """The full session, as GET returns it."""

    model_config = ConfigDict(from_attributes=True)

    session_id: str
    status: str
    is_terminal: StrictBool
    environment: str
    project: str
    amount: str
    currency: str
    mode: str
    gateway: str
    caller: str | None
    description: str | None
    callback: str | None
    memory: str | None
    billing_address: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    completed_at: datetime | None
    transfer_status: str | None
    card_brand: str | None
    card_last4: str | None
    processor: dict[str, Any] | None
    confirmation_code: str | None = Field(
        description="6-8 digits the payer heard or saw on success (Paydial addition)"
    )
    error: ErrorInfo | None
    captured_amount: str | None = Field(description="What was captured; null until it is")
    captured_at: datetime | None
    voided_at: datetime | None
    amount_refunded: str = Field(description="The sum of succeeded refunds")
    refunds: list[RefundOut]


def session_out(session: PaymentSession, project_slug: str) -> SessionOut:
    """The session as the API shows it: amounts in dollars, error only when payment failed."""
    error = None
    if session.status == Status.PAYMENT_FAILED and session.error_code:
        error = ErrorInfo(code=session.error_code, message=session.error_message or "")
    return SessionOut(
        session_id=session.id,
        status=session.status,
        is_terminal=Status(session.status).is_terminal,
        environment=session.environment,
        project=project_slug,
        amount=cents_to_decimal_string(session.amount_cents),
        currency=session.currency,
        mode=session.mode,
        gateway=session.gateway,
        caller=session.caller,
        description=session.description,
        callback=session.callback,
        memory=session.memory,
        billing_address=session.billing_address,
        created_at=session.created_at,
        updated_at=session.updated_at,
        expires_at=session.expires_at,
        completed_at=session.completed_at,
        transfer_status=session.transfer_status,
        card_brand=session.card_brand,
        card_last4=session.card_last4,
        processor=session.processor,
        confirmation_code=session.confirmation_code,
        error=error,
        captured_amount=_dollars(session.captured_cents),
        captured_at=session.captured_at,
        voided_at=session.voided_at,
        amount_refunded=cents_to_decimal_string(session.refunded_cents or 0),
        refunds=[refund_out(refund) for refund in session.refunds],
    )
