"""Blueprint: after the payment (refunds, capture, void of a session's payment), API-key auth.

Each POST records the operation and answers at once; the gateway call runs off the request
(payments.refunds), so a refund reads `pending` until the gateway has answered.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TypeVar

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel

from api.auth import current_caller, require_api_key
from api.extension import current_services
from api.idempotency import idempotent
from api.schemas import CaptureCreate, RefundCreate, RefundList
from api.validation import parse_body
from payments import refunds
from payments.refunds import Reach

bp = Blueprint("refunds", __name__, url_prefix="/v1/sessions/<session_id>")
M = TypeVar("M", bound=BaseModel)


def _reach() -> Reach:
    caller = current_caller()
    return Reach(account_id=caller.account_id, environment=caller.environment)


def _optional_body(model: type[M]) -> M:
    """Every field is optional, so an empty body means all the defaults."""
    return parse_body(model) if request.get_data(cache=True) else model()


def _cents(amount: Decimal | None) -> int | None:
    return None if amount is None else int(amount * 100)


def _answer(model: BaseModel, status: int) -> Response:
    response = jsonify(model.model_dump(mode="json"))
    response.status_code = status
    return response


@bp.post("/refunds")
@require_api_key
@idempotent(RefundCreate)
def create_refund(session_id: str) -> Response:
    body = _optional_body(RefundCreate)
    out = refunds.refund(
        current_services(),
        session_id,
        _reach(),
        amount_cents=_cents(body.amount),
        reason=body.reason,
    )
    return _answer(out, 201)


@bp.get("/refunds")
@require_api_key
def list_refunds(session_id: str) -> Response:
    data = refunds.list_refunds(current_services(), session_id, _reach())
    return _answer(RefundList(data=data), 200)


@bp.post("/capture")
@require_api_key
@idempotent(CaptureCreate)
def capture(session_id: str) -> Response:
    body = _optional_body(CaptureCreate)
    out = refunds.capture(
        current_services(), session_id, _reach(), amount_cents=_cents(body.amount)
    )
    return _answer(out, 202)


@bp.post("/void")
@require_api_key
@idempotent()
def void(session_id: str) -> Response:
    return _answer(refunds.void(current_services(), session_id, _reach()), 202)
