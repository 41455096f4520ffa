"""The session as the outside world sees it: one serializer for the API and the webhooks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool

from payments.model import Status, cents_to_decimal_string
from payments.store import PaymentSession


class ErrorInfo(BaseModel):
    code: str
    message: str


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
    error: ErrorInfo | None


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
        error=error,
    )
