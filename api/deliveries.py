"""Blueprint: the merchant's view of webhook deliveries, and replaying one (API-key auth)."""

from __future__ import annotations

from typing import Annotated

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel, StringConstraints

from api.auth import current_caller, require_api_key
from api.extension import current_services
from api.idempotency import idempotent
from api.schemas import WebhookDeliveryList, WebhookDeliveryOut
from api.validation import parse_query
from payments.delivery import (
    DeliveryView,
    deliveries_for_project,
    deliveries_for_session,
    replay,
)

bp = Blueprint("deliveries", __name__, url_prefix="/v1")


class DeliveriesQuery(BaseModel):
    session_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,64}$")]


def _out(view: DeliveryView) -> WebhookDeliveryOut:
    delivery, event = view.delivery, view.event
    return WebhookDeliveryOut(
        id=delivery.id,
        event_id=event.id,
        event_type=event.type,
        session_id=event.session_id,
        attempt=delivery.attempt,
        url=delivery.url,
        status_code=delivery.status_code,
        latency_ms=delivery.latency_ms,
        error=delivery.error,
        created_at=delivery.created_at,
        event_delivered=event.delivered,
        next_attempt_at=event.next_attempt_at,
    )


@bp.get("/webhook-deliveries")
@require_api_key
def list_deliveries() -> Response:
    query = parse_query(DeliveriesQuery)
    caller = current_caller()
    views = deliveries_for_session(
        current_services(),
        query.session_id,
        account_id=caller.account_id,
        environment=caller.environment,
    )
    return jsonify(WebhookDeliveryList(data=[_out(v) for v in views]).model_dump(mode="json"))


@bp.get("/projects/<slug>/webhook-deliveries")
@require_api_key
def list_project_deliveries(slug: str) -> Response:
    """The attempts for the events about the project itself (`widget-charges-paused`), which
    belong to no session."""
    caller = current_caller()
    views = deliveries_for_project(
        current_services(), slug, account_id=caller.account_id, environment=caller.environment
    )
    return jsonify(WebhookDeliveryList(data=[_out(v) for v in views]).model_dump(mode="json"))


@bp.post("/webhook-deliveries/<delivery_id>/replay")
@require_api_key
@idempotent()
def replay_delivery(delivery_id: str) -> Response:
    caller = current_caller()
    view = replay(
        current_services(),
        delivery_id,
        account_id=caller.account_id,
        environment=caller.environment,
    )
    response = jsonify(_out(view).model_dump(mode="json"))
    response.status_code = 201
    return response
