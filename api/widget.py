"""Blueprint: the embeddable card frame, its loader script, and the endpoints the frame calls.

The session id is the credential for reading what the frame shows. Charging also needs a CSRF
token bound to the session with PAYDIAL_SECRET_KEY, which only the frame's own HTML carries.
Card data in a request body is never logged and never echoed back in an error. What the frame is
handed and says (its CSRF token and embedding rules, messages, brand and postal rules) is in
api/frame.py; the bodies are in api/schemas.py.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    jsonify,
    render_template,
    request,
    send_from_directory,
    url_for,
)
from sqlalchemy.orm import Session as Tx
from werkzeug.exceptions import Forbidden, Gone

from api.errors import RequestValidationError
from api.extension import current_services
from api.frame import (
    BASE_CSP,
    CLOSED_MESSAGES,
    CSRF_HEADER,
    NOT_OPEN,
    REASON_MESSAGES,
    VELOCITY_LIMITED,
    VELOCITY_MESSAGE,
    csrf_token,
    format_amount,
    frame_ancestors,
    frame_brands,
    frame_postal,
    parent_origin,
    postal_message,
)
from api.schemas import ChargeApproved, ChargeDeclined, ChargeRequest, WidgetSessionOut
from api.validation import parse_body
from gateways.base import Card
from ivr import cards
from payments.accounts import get_project_by_slug
from payments.attempts import pay
from payments.errors import Conflict, NotFound
from payments.model import Channel, Environment, Gateway, PaymentMode, Status
from payments.project_settings import (
    DEFAULT_LABELS,
    OPTIONAL_FIELDS,
    ProjectSettings,
    live_origins,
    normalize_origin,
    project_settings,
)
from payments.services import Services
from payments.sessions import NewSession, create_session, load_session
from payments.store import PaymentSession, Project
from payments.velocity import VelocityLimited

WIDGET_DIR = Path(__file__).resolve().parent.parent / "widget"
LOADER_MAX_AGE = 300  # seconds: /widget/v1/widget.js picks up a new script within 5 minutes
IMMUTABLE_MAX_AGE = 31_536_000  # a year: the versioned URL's content never changes
DEMO_PROJECT = "demo"

bp = Blueprint("widget", __name__, template_folder=str(WIDGET_DIR))


def _chat_session(tx: Tx, session_id: str, services: Services) -> tuple[PaymentSession, Project]:
    """A widget session and its project; voice sessions are not reachable through the widget."""
    session = load_session(tx, session_id, now=services.clock())
    if session.channel != Channel.CHAT:
        raise NotFound("Session not found")
    return session, tx.get_one(Project, session.project_id)


def _labels(settings: ProjectSettings, session: PaymentSession) -> dict[str, str]:
    defaults = DEFAULT_LABELS
    if session.mode == PaymentMode.TOKENIZE:
        defaults = defaults | {"submit": "Save card", "success": "Card saved"}
    labels = defaults | settings.widget.labels
    labels["submit"] = labels["submit"].replace(
        "{amount}", format_amount(session.amount_cents, session.currency)
    )
    return labels


def _fields(settings: ProjectSettings) -> dict[str, bool]:
    fields = {name: settings.widget.fields.get(name, False) for name in OPTIONAL_FIELDS}
    fields["postal_code"] = fields["postal_code"] or settings.require_postal_code
    return fields


def _view(session: PaymentSession, project: Project, settings: ProjectSettings) -> WidgetSessionOut:
    return WidgetSessionOut(
        session_id=session.id,
        status=session.status,
        is_terminal=Status(session.status).is_terminal,
        environment=session.environment,
        mode=session.mode,
        amount_cents=session.amount_cents,
        currency=session.currency,
        description=session.description,
        merchant_name=settings.display_name or project.name,
        theme=settings.widget.theme,
        labels=_labels(settings, session),
        fields=_fields(settings),
        expires_at=session.expires_at,
    )


def _html(body: str, status: int, csp: str) -> Response:
    response = Response(body, status=status, mimetype="text/html")
    response.headers["Content-Security-Policy"] = csp
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.after_request
def _security_headers(response: Response) -> Response:
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Content-Security-Policy", BASE_CSP + "; frame-ancestors 'none'")
    if response.mimetype == "application/json":
        response.headers["Cache-Control"] = "no-store"
    return response


@cache
def loader_version() -> str:
    """The loader's content hash: its versioned URL changes whenever the script does."""
    return hashlib.sha256((WIDGET_DIR / "v1" / "widget.js").read_bytes()).hexdigest()[:16]


@bp.get("/widget/v1/widget.js")
def loader() -> Response:
    """Always the current script, cached briefly; names the immutable URL it is also under."""
    response = send_from_directory(WIDGET_DIR / "v1", "widget.js", max_age=LOADER_MAX_AGE)
    response.headers["Cache-Control"] = f"public, max-age={LOADER_MAX_AGE}"
    versioned = url_for("widget.versioned_loader", version=loader_version())
    response.headers["Link"] = f'<{versioned}>; rel="canonical"'
    return response


@bp.get("/widget/v1/widget.<version>.js")
def versioned_loader(version: str) -> Response:
    """The script under its content hash, cacheable for a year; an old hash finds the current."""
    current = url_for("widget.versioned_loader", version=loader_version())
    if version != loader_version():
        headers = {"Location": current, "Cache-Control": f"public, max-age={LOADER_MAX_AGE}"}
        return Response(status=302, headers=headers)
    response = send_from_directory(WIDGET_DIR / "v1", "widget.js", max_age=IMMUTABLE_MAX_AGE)
    response.headers["Cache-Control"] = f"public, max-age={IMMUTABLE_MAX_AGE}, immutable"
    return response


@bp.get("/widget/assets/<path:filename>")
def asset(filename: str) -> Response:
    return send_from_directory(WIDGET_DIR / "assets", filename, max_age=300)


@bp.get("/widget/<session_id>")
def frame(session_id: str) -> Response:
    """The card form; results reach the page only when its origin is one the project allows."""
    services = current_services()
    try:
        with services.db.transaction() as tx:
            session, project = _chat_session(tx, session_id, services)
            settings = project_settings(project)
            view = _view(session, project, settings)
    except NotFound:
        return _closed_page("This payment link is not valid.", 404, "session_not_found")
    test_mode = view.environment == Environment.TEST
    allowed = (
        settings.widget.allowed_origins
        if test_mode
        else live_origins(settings.widget.allowed_origins)
    )
    own = normalize_origin(request.host_url)
    # The built-in /demo page and the dashboard's settings preview embed test sessions from here.
    if test_mode and allowed and own is not None:
        allowed = [*allowed, own]
    try:
        origin = parent_origin(request.args.get("origin"), allowed, test_mode)
    except Forbidden as refused:
        return _closed_page(str(refused.description), 403, "origin_not_allowed")
    status = Status(view.status)
    body = render_template(
        "frame.html",
        view=view,
        amount=format_amount(view.amount_cents, view.currency),
        csrf_token=csrf_token(services.secrets.secret_key, view.session_id),
        parent_origin=origin,
        test_mode=test_mode,
        zip_required=settings.require_postal_code,
        accepted_brands=settings.accepted_brands,
        brands=frame_brands(),
        postal=frame_postal(settings.callback_countries),
        closed_message=CLOSED_MESSAGES.get(status, NOT_OPEN) if status.is_terminal else None,
    )
    return _html(body, 200, f"{BASE_CSP}; frame-ancestors {frame_ancestors(allowed, test_mode)}")


def _closed_page(message: str, status: int, error_code: str) -> Response:
    """Why there is no form, shown in any frame (it holds nothing to protect) and posted to the
    page as a failure, so `onFailure` hears `error_code` instead of a broken frame."""
    body = render_template("closed.html", message=message, error_code=error_code)
    return _html(body, status, f"{BASE_CSP}; frame-ancestors *")


@bp.get("/v1/widget-sessions/<session_id>")
def widget_session(session_id: str) -> Response:
    services = current_services()
    with services.db.transaction() as tx:
        session, project = _chat_session(tx, session_id, services)
        view = _view(session, project, project_settings(project))
    return jsonify(view.model_dump(mode="json"))


@bp.post("/v1/widget-sessions/<session_id>/charge")
def charge(session_id: str) -> Response:
    services = current_services()
    presented = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(presented, csrf_token(services.secrets.secret_key, session_id)):
        raise Forbidden("Missing or invalid CSRF token")
    body = parse_body(ChargeRequest)
    with services.db.transaction() as tx:
        session, project = _chat_session(tx, session_id, services)
        status, settings = Status(session.status), project_settings(project)
        remaining = settings.max_payment_attempts - session.attempt_count
    if status == Status.EXPIRED:
        raise Gone("This payment session has expired")
    if status.is_terminal:
        raise Conflict(f"This payment session is already {status.value}")
    project_id, environment = session.project_id, session.environment
    services.breaker.check(project_id, environment, services.clock())
    postal_code = _check_card(body, settings, services.clock().date())
    try:
        outcome = pay(
            services,
            session_id,
            Card(
                number=body.card_number,
                exp_month=body.exp_month,
                exp_year=body.exp_year,
                cvc=body.cvc,
            ),
            postal_code=postal_code,
        )
    except VelocityLimited as limited:  # nothing reached the gateway; another card still may
        locked = ChargeDeclined(
            error_code=VELOCITY_LIMITED,
            error_message=VELOCITY_MESSAGE,
            attempts_remaining=remaining,
            status=status.value,
        )
        # also a 429 `Detail`, as /openapi.json describes every 429
        response = jsonify({"detail": VELOCITY_MESSAGE} | locked.model_dump(mode="json"))
        response.status_code = 429
        response.headers["Retry-After"] = str(limited.retry_after)
        return response
    if outcome.approved or outcome.declined:  # the gateway's own errors say nothing of the card
        services.breaker.count(
            services.db, project_id, environment, declined=outcome.declined, now=services.clock()
        )
    if outcome.approved:
        approved = ChargeApproved(
            transaction_id=outcome.transaction_id,
            confirmation_code=outcome.confirmation_code,
            card_brand=outcome.card_brand,
            card_last4=outcome.card_last4,
            amount_cents=outcome.amount_cents,
            currency=outcome.currency,
            status=outcome.status.value,
        )
        return jsonify(approved.model_dump(mode="json"))
    declined = ChargeDeclined(
        error_code=outcome.error_code,
        error_message=outcome.error_message,
        attempts_remaining=outcome.attempts_remaining,
        status=outcome.status.value,
    )
    response = jsonify(declined.model_dump(mode="json"))
    response.status_code = 402
    return response


def _check_card(body: ChargeRequest, settings: ProjectSettings, today: date) -> str | None:
    """The same card rules as the phone; the postal code in the formats of the project's countries
    (returned as the gateway gets it: a ZIP in digits, `K1A 0B1`), when one is given."""
    accepted = set(settings.accepted_brands)
    brand = cards.detect_brand(body.card_number)
    typed = (body.postal_code or "").strip()
    countries = settings.callback_countries
    postal_code = cards.normalize_postal_code(typed, countries) if typed else None
    problems: list[tuple[str, cards.Reason | None]] = [
        ("card_number", cards.check_card_number(body.card_number, accepted)),
        ("exp_month", cards.check_expiry(f"{body.exp_month:02d}{body.exp_year % 100:02d}", today)),
        ("cvc", cards.check_security_code(body.cvc, brand)),
    ]
    if typed and postal_code is None:
        problems.append(("postal_code", cards.Reason.INVALID_POSTAL_CODE))
    messages = REASON_MESSAGES | {cards.Reason.INVALID_POSTAL_CODE: postal_message(countries)}
    errors: list[dict[str, Any]] = [
        {"loc": ["body", field], "msg": messages[reason], "type": reason.value}
        for field, reason in problems
        if reason is not None
    ]
    if not typed and settings.require_postal_code:
        errors.append({"loc": ["body", "postal_code"], "msg": "Field required", "type": "missing"})
    if errors:
        raise RequestValidationError(errors)
    return postal_code


@bp.get("/demo")
def demo() -> Response:
    if not current_app.config.get("PAYDIAL_DEMO"):
        abort(404)
    services = current_services()
    now = services.clock()
    with services.db.transaction() as tx:
        project = get_project_by_slug(tx, DEMO_PROJECT)
        session = create_session(
            tx,
            account_id=project.account_id,
            environment=Environment.TEST,
            now=now,
            new=NewSession(
                project=project.slug,
                amount_cents=2500,
                mode=PaymentMode.CHARGE,
                gateway=Gateway.STRIPE,
                channel=Channel.CHAT,
                ttl=timedelta(minutes=services.settings.widget_ttl_minutes),
                description="Demo order: a bag of coffee beans",
            ),
        )
    body = render_template("demo.html", session_id=session.id, loader_version=loader_version())
    return _html(body, 200, f"{BASE_CSP}; frame-src 'self'; frame-ancestors 'none'")
