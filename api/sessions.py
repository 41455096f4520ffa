"""Blueprint: the merchant's sessions API (/v1/sessions, /v1/widget-sessions), API-key auth."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any
from uuid import UUID

from flask import Blueprint, Response, jsonify
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field

from api.auth import current_caller, require_api_key
from api.extension import current_services
from api.idempotency import idempotent
from api.schemas import (
    E164_PATTERN,
    CreateWidgetSession,
    SessionCreate,
    SessionCreateResponse,
    WidgetSessionCreated,
    e164,
)
from api.validation import parse_body, parse_path, parse_query
from payments.model import Channel, Gateway, PaymentMode
from payments.sessions import (
    NewSession,
    OpenedSession,
    cancel_session,
    find_session_for_caller,
    load_session,
    open_session,
)
from payments.settings import Settings
from payments.store import PaymentSession, Project
from payments.views import session_out

bp = Blueprint("sessions", __name__, url_prefix="/v1")


def _unencoded_plus(value: Any) -> Any:
    """`?caller=+1415...` sent unencoded arrives as " 1415...": read the space as the `+`."""
    if isinstance(value, str) and value.startswith(" "):
        return "+" + value[1:]
    return value


class CallerQuery(BaseModel):
    caller: Annotated[str, BeforeValidator(_unencoded_plus), AfterValidator(e164)] = Field(
        description="Phone number in E.164 format", json_schema_extra={"pattern": E164_PATTERN}
    )


class SessionPath(BaseModel):
    session_id: UUID


def _session_id(session_id: str) -> str:
    """The path's id in the form sessions are stored under; a malformed one is a 422."""
    return str(parse_path(SessionPath, session_id=session_id).session_id)


def _created(model: BaseModel) -> Response:
    response = jsonify(model.model_dump(mode="json"))
    response.status_code = 201
    return response


def _render(session: PaymentSession, project: Project) -> Response:
    return jsonify(session_out(session, project).model_dump(mode="json"))


def voice_session(body: SessionCreate, settings: Settings) -> NewSession:
    """A POST /v1/sessions body as the core's request to open a voice session."""
    return NewSession(
        project=body.project,
        amount_cents=int(body.amount * 100),
        mode=body.mode,
        gateway=body.gateway,
        channel=Channel.VOICE,
        ttl=timedelta(minutes=settings.session_ttl_minutes),
        caller=body.caller,
        description=body.description,
        callback=body.callback,
        memory=body.memory,
        billing_address=body.billing_address.model_dump() if body.billing_address else None,
        language=body.language,
    )


def voice_created(
    session: OpenedSession | PaymentSession, settings: Settings
) -> SessionCreateResponse:
    return SessionCreateResponse(
        session_id=session.id,
        status=session.status,
        phone_number=settings.phone_number,
        sip_uri=f"sip:{session.id}@{settings.sip_domain}",
        created_at=session.created_at,
        access_code=session.access_code or "",
        expires_at=session.expires_at,
    )


def chat_session(body: CreateWidgetSession, settings: Settings) -> NewSession:
    """A POST /v1/widget-sessions body as the core's request to open a chat session."""
    return NewSession(
        project=body.project,
        amount_cents=body.amount_cents,
        mode=PaymentMode(body.mode),
        gateway=Gateway(body.gateway),
        channel=Channel.CHAT,
        ttl=timedelta(minutes=settings.widget_ttl_minutes),
        description=body.description,
    )


def chat_created(
    session: OpenedSession | PaymentSession, settings: Settings
) -> WidgetSessionCreated:
    return WidgetSessionCreated(
        session_id=session.id,
        status=session.status,
        widget_url=f"{settings.public_url.rstrip('/')}/widget/{session.id}",
        expires_at=session.expires_at,
    )


def _open(new: NewSession) -> OpenedSession:
    """Create a session for the calling key's account, in the key's mode."""
    services = current_services()
    caller = current_caller()
    return open_session(
        services.db,
        account_id=caller.account_id,
        environment=caller.environment,
        now=services.clock(),
        new=new,
    )


@bp.post("/sessions")
@require_api_key
@idempotent(SessionCreate)
def create_voice_session() -> Response:
    settings = current_services().settings
    session = _open(voice_session(parse_body(SessionCreate), settings))
    return _created(voice_created(session, settings))


@bp.get("/sessions/<session_id>")
@require_api_key
def get_session(session_id: str) -> Response:
    services = current_services()
    caller = current_caller()
    with services.db.transaction() as tx:
        session = load_session(
            tx,
            _session_id(session_id),
            now=services.clock(),
            account_id=caller.account_id,
            environment=caller.environment,
        )
        return _render(session, tx.get_one(Project, session.project_id))


@bp.get("/sessions")
@require_api_key
def find_session() -> Response:
    query = parse_query(CallerQuery)
    services = current_services()
    caller = current_caller()
    with services.db.transaction() as tx:
        session = find_session_for_caller(
            tx,
            account_id=caller.account_id,
            environment=caller.environment,
            caller=query.caller,
            now=services.clock(),
        )
        return _render(session, tx.get_one(Project, session.project_id))


@bp.post("/sessions/<session_id>/cancel")
@require_api_key
@idempotent()
def cancel(session_id: str) -> Response:
    services = current_services()
    caller = current_caller()
    with services.db.transaction() as tx:
        cancel_session(
            tx,
            _session_id(session_id),
            account_id=caller.account_id,
            environment=caller.environment,
            now=services.clock(),
        )
    return Response(status=204)


@bp.post("/widget-sessions")
@require_api_key
@idempotent(CreateWidgetSession)
def create_widget_session() -> Response:
    settings = current_services().settings
    session = _open(chat_session(parse_body(CreateWidgetSession), settings))
    return _created(chat_created(session, settings))
