"""The session as the outside world sees it: one serializer for the API and the webhooks.

Field names and shapes follow Maven's session object (https://docs.trymaven.com), so a Maven
integration reads Paydial's GET and webhook bodies unchanged.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field, StrictBool

from gateways.base import (
    PROCESSOR_MODELS,
    AuthorizenetProcessor,
    BraintreeProcessor,
    ProcessorCard,
    Shift4Processor,
    StripeProcessor,
)
from payments.model import (
    Channel,
    Gateway,
    OperationState,
    PaymentMode,
    Status,
    cents_to_decimal_string,
)
from payments.project_settings import project_settings
from payments.store import MoneyOperation, PaymentSession, Project

PublicStatus = Literal["pending", "succeeded", "failed"]


def public_status(state: str) -> PublicStatus:
    """An operation as the merchant sees it: in flight, however it is, reads `pending`."""
    if state == OperationState.SUCCEEDED:
        return "succeeded"
    return "failed" if state == OperationState.FAILED else "pending"


def _dollars(cents: int | None) -> str | None:
    return None if cents is None else cents_to_decimal_string(cents)


ERROR_DESCRIPTION = (
    "Why it failed; on a `pending` one, `outcome_unconfirmed`: the gateway never said whether it"
    " went through, Paydial has stopped asking, and it may have moved money"
)


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
    error: ErrorInfo | None = Field(description=ERROR_DESCRIPTION)
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
    error: ErrorInfo | None = Field(description=ERROR_DESCRIPTION)
    created_at: datetime
    completed_at: datetime | None


def _error(operation: MoneyOperation) -> ErrorInfo | None:
    """Why it failed; on a `pending` one, why nobody asks the gateway about it any more."""
    if operation.state == OperationState.SUCCEEDED or not operation.error_code:
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


class SessionGetResponse(BaseModel):
    """The full session, as GET returns it."""

    session_id: str = Field(json_schema_extra={"format": "uuid"})
    status: Status = Field(description="Session status")
    is_terminal: StrictBool
    environment: Literal["test", "live"] = Field(description="The mode of the key that made it")
    project: str = Field(description="The project's slug")
    project_slug: str = Field(description="The project's slug (Maven's name for `project`)")
    amount: str = Field(description="Amount in dollars, as a decimal string (e.g. 150.00)")
    currency: Literal["USD"]
    mode: PaymentMode
    gateway: Gateway
    caller: str | None
    description: str | None
    callback: str | None
    memory: str | None
    billing_address: dict[str, Any] | None
    language: str = Field(description="The prompt language of the call (e.g. en-US, es-US)")
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    completed_at: datetime | None
    transfer_status: str | None
    card_brand: str | None
    card_last4: str | None
    processor: (
        StripeProcessor | AuthorizenetProcessor | BraintreeProcessor | Shift4Processor | None
    ) = Field(description="The gateway's identifiers once a payment was attempted; by gateway")
    confirmation_code: str | None = Field(
        description="6-8 digits the payer heard or saw on success (Paydial addition)"
    )
    error: ErrorInfo | None = Field(description="Set only when the status is payment-failed")
    captured_amount: str | None = Field(description="What was captured; null until it is")
    captured_at: datetime | None
    voided_at: datetime | None
    amount_refunded: str = Field(description="The sum of succeeded refunds")
    refunds: list[RefundOut]


class SessionWebhook(SessionGetResponse):
    """The body POSTed to the project's webhook URL, signed in the `Maven-Signature` header."""

    amount: float = Field(  # type: ignore[assignment]  # Maven's webhook sends a JSON number
        description="Amount in dollars, as a JSON number (e.g. 49.99)"
    )
    event_id: str = Field(description="Unique per event; a retried delivery keeps it")
    source: Channel = Field(description="Where the session was paid: voice or chat")


def _processor(session: PaymentSession) -> ProcessorCard | None:
    """The stored gateway identifiers plus the card, every documented key present (null if none)."""
    if session.processor is None:
        return None
    model = PROCESSOR_MODELS[session.gateway]
    values = {name: session.processor.get(name) for name in model.model_fields}
    return model(**values | {"card_brand": session.card_brand, "card_last4": session.card_last4})


def session_out(session: PaymentSession, project: Project) -> SessionGetResponse:
    """The session as the API shows it: amounts in dollars, error only when payment failed."""
    error = None
    if session.status == Status.PAYMENT_FAILED and session.error_code:
        error = ErrorInfo(code=session.error_code, message=session.error_message or "")
    return SessionGetResponse(
        session_id=session.id,
        status=Status(session.status),
        is_terminal=Status(session.status).is_terminal,
        environment=session.environment,
        project=project.slug,
        project_slug=project.slug,
        amount=cents_to_decimal_string(session.amount_cents),
        currency=session.currency.upper(),
        mode=PaymentMode(session.mode),
        gateway=Gateway(session.gateway),
        caller=session.caller,
        description=session.description,
        callback=session.callback,
        memory=session.memory,
        billing_address=session.billing_address,
        language=session.language or project_settings(project).language,
        created_at=session.created_at,
        updated_at=session.updated_at,
        expires_at=session.expires_at,
        completed_at=session.completed_at,
        transfer_status=session.transfer_status,
        card_brand=session.card_brand,
        card_last4=session.card_last4,
        processor=_processor(session),
        confirmation_code=session.confirmation_code,
        error=error,
        captured_amount=_dollars(session.captured_cents),
        captured_at=session.captured_at,
        voided_at=session.voided_at,
        amount_refunded=cents_to_decimal_string(session.refunded_cents or 0),
        refunds=[refund_out(refund) for refund in session.refunds],
    )


def webhook_body(session: PaymentSession, project: Project, event_id: str) -> SessionWebhook:
    """The session as its webhook announces it; the caller only for a phone session."""
    source = Channel(session.channel)
    return SessionWebhook(
        **dict(session_out(session, project))
        | {
            "amount": float(Decimal(session.amount_cents) / 100),
            "event_id": event_id,
            "source": source,
            "caller": session.caller if source is Channel.VOICE else None,
        }
    )
