"""The dashboard's pages: sign-in, overview, sessions, settings, developers. Thin views: each
parses its form or query, calls the core, renders a template."""

from __future__ import annotations

import base64
from datetime import date, timedelta
from typing import Annotated, Any, Literal

from flask import Response, abort, flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field, StringConstraints, ValidationError, field_validator
from sqlalchemy.orm import Session as Tx

from api.dashboard import (
    await_second_factor,
    bp,
    current_user,
    login_required,
    second_factor_user,
    start_session,
)
from api.extension import current_services
from api.projects import project_out
from api.schemas import PositiveAmount
from gateways import required_credentials
from gateways.cards import Brand
from payments import refunds, reports
from payments.accounts import account_projects, find_account_project, issue_key, revoke_key
from payments.credentials import CREDENTIALS_PURPOSE, set_credentials
from payments.delivery import replay, send_test_event
from payments.errors import Conflict, GatewayUnreachable, InvalidInput, NotFound
from payments.model import Environment, Gateway, Status
from payments.outbox import WEBHOOK_SECRET_PURPOSE
from payments.project_settings import (
    DEFAULT_LABELS,
    LABEL_KEYS,
    LANGUAGES,
    MAX_PAYMENT_ATTEMPTS,
    OPTIONAL_FIELDS,
    THEME_KEYS,
    OptInEvent,
)
from payments.projects import change_project, rotate_webhook_secret, setting_changes
from payments.refunds import Reach
from payments.sessions import cancel_session, load_session, preview_session
from payments.store import Project
from payments.users import (
    TOTP_PURPOSE,
    SignInThrottled,
    check_second_factor,
    disable_totp,
    enable_totp,
    new_totp_secret,
    sign_in,
    totp_uri,
)
from payments.views import session_out

Mode = Literal["test", "live"]


class SignIn(BaseModel):
    email: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=320)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class SessionQuery(BaseModel):
    mode: Mode = "test"
    status: Status | None = None
    caller: Annotated[str, StringConstraints(strip_whitespace=True, max_length=20)] | None = None
    since: date | None = None
    until: date | None = None
    q: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = None
    page: int = Field(1, ge=1, le=10_000)

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class CodeForm(BaseModel):
    code: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\d{6}$")]


SIX_DIGITS = "Enter the six-digit code from your authenticator app."
ENROL_KEY = "totp_enrolment"  # the session's sealed, not yet enabled, TOTP secret


def _mode() -> Environment:
    return Environment.LIVE if request.values.get("mode") == "live" else Environment.TEST


def _project(tx: Tx, slug: str) -> Project:
    """A project of the signed-in user's account; anything else is a 404."""
    return find_account_project(tx, current_user().account_id, slug)


def _page(template: str, tx: Tx, project: Project | None, **context: Any) -> str:
    projects = account_projects(tx, current_user().account_id)
    return render_template(
        f"dashboard/{template}",
        user=current_user(),
        project=project,
        projects=projects,
        mode=_mode().value,
        **context,
    )


def _safe_next(target: str | None) -> str:
    """Only a path inside the dashboard, never another site (no open redirect)."""
    if target and target.startswith("/dashboard") and not target.startswith("//"):
        return target
    return url_for("dashboard.home")


def _login_page(error: str | None = None, email: str = "", status: int = 200) -> Response:
    body = render_template("dashboard/login.html", error=error, email=email)
    return Response(body, status=status)


def _address() -> str:
    return request.remote_addr or "unknown"


def _throttled(response: Response, throttled: SignInThrottled) -> Response:
    response.headers["Retry-After"] = str(throttled.retry_after)
    return response


def _back(endpoint: str, **values: Any) -> ResponseReturnValue:
    """Redirect to a dashboard page in the current mode (after a POST)."""
    return redirect(url_for(endpoint, mode=_mode().value, **values))


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    if request.method == "GET":
        return _login_page()
    services = current_services()
    try:
        form = SignIn.model_validate(request.form.to_dict())
    except ValidationError:
        return _login_page("Enter your email and password.", status=422)
    try:
        with services.db.transaction() as tx:
            user = sign_in(tx, form.email, form.password, address=_address(), now=services.clock())
            user_id = user.id if user else None
            needs_code = user is not None and user.totp_secret_sealed is not None
    except SignInThrottled as throttled:
        return _throttled(_login_page(str(throttled), form.email, status=429), throttled)
    if user_id is None:
        return _login_page("Wrong email or password.", form.email, status=401)
    if needs_code:
        await_second_factor(user_id, services.clock())
        return redirect(url_for("dashboard.second_factor", next=request.args.get("next")))
    start_session(user_id, services.clock())
    return redirect(_safe_next(request.args.get("next")))


def _code_page(error: str | None = None, status: int = 200) -> Response:
    return Response(render_template("dashboard/code.html", error=error), status=status)


@bp.route("/login/code", methods=["GET", "POST"])
def second_factor() -> ResponseReturnValue:
    """The authenticator app's code, after the right password of a user who enrolled one."""
    services = current_services()
    now = services.clock()
    user_id = second_factor_user(now)
    if user_id is None:
        return redirect(url_for("dashboard.login", next=request.args.get("next")))
    if request.method == "GET":
        return _code_page()
    try:
        form = CodeForm.model_validate(request.form.to_dict())
    except ValidationError:
        return _code_page(SIX_DIGITS, status=422)
    sealer = services.sealer(TOTP_PURPOSE)
    try:
        with services.db.transaction() as tx:
            ok = check_second_factor(
                tx, user_id, form.code, address=_address(), sealer=sealer, now=now
            )
    except SignInThrottled as throttled:
        return _throttled(_code_page(str(throttled), status=429), throttled)
    if not ok:
        return _code_page("That code is not right. Try the one your app shows now.", 401)
    start_session(user_id, now)
    return redirect(_safe_next(request.args.get("next")))


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    session.clear()
    return redirect(url_for("dashboard.login"))


@bp.get("/")
@login_required
def home() -> ResponseReturnValue:
    with current_services().db.transaction() as tx:
        projects = account_projects(tx, current_user().account_id)
        if not projects:
            return _page("empty.html", tx, None)
        return redirect(url_for("dashboard.overview", slug=projects[0].slug))


@bp.get("/<slug>/")
@login_required
def overview(slug: str) -> ResponseReturnValue:
    services = current_services()
    with services.db.transaction() as tx:
        project = _project(tx, slug)
        report = reports.overview(tx, project, _mode(), now=services.clock())
        return _page("overview.html", tx, project, report=report)


@bp.get("/<slug>/sessions")
@login_required
def sessions(slug: str) -> ResponseReturnValue:
    try:
        query = SessionQuery.model_validate(request.args.to_dict())
    except ValidationError as error:
        abort(422, "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in error.errors()))
    wanted = reports.SessionFilter(
        status=query.status.value if query.status else None,
        caller=query.caller,
        since=query.since,
        until=query.until,
        search=query.q,
        page=query.page,
    )
    with current_services().db.transaction() as tx:
        project = _project(tx, slug)
        found, more = reports.find_sessions(tx, project, _mode(), wanted)
        return _page(
            "sessions.html",
            tx,
            project,
            sessions=found,
            more=more,
            query=query,
            statuses=[s.value for s in Status],
        )


def _session_page(slug: str, session_id: str, **context: Any) -> str:
    services = current_services()
    with services.db.transaction() as tx:
        project = _project(tx, slug)
        found = load_session(
            tx,
            session_id,
            now=services.clock(),
            account_id=current_user().account_id,
            environment=_mode(),
        )
        if found.project_id != project.id:
            raise NotFound("Session not found")
        detail = reports.session_detail(tx, found)
        return _page(
            "session.html",
            tx,
            project,
            detail=detail,
            cancellable=found.status in (Status.PENDING.value, Status.COLLECTING.value),
            money=session_out(found, project),
            **context,
        )


@bp.get("/<slug>/sessions/<session_id>")
@login_required
def session_page(slug: str, session_id: str) -> ResponseReturnValue:
    return _session_page(slug, session_id)


@bp.post("/<slug>/sessions/<session_id>/cancel")
@login_required
def cancel(slug: str, session_id: str) -> ResponseReturnValue:
    services = current_services()
    try:
        with services.db.transaction() as tx:
            _project(tx, slug)
            cancel_session(
                tx,
                session_id,
                account_id=current_user().account_id,
                environment=_mode(),
                now=services.clock(),
            )
    except Conflict as conflict:
        return Response(_session_page(slug, session_id, notice=str(conflict)), status=409)
    flash("Session cancelled.")
    return _back("dashboard.session_page", slug=slug, session_id=session_id)


class AfterPaymentForm(BaseModel):
    """Refund, capture and void share one form: an optional amount, a reason, a confirmation."""

    amount: PositiveAmount | None = None
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] | None = None
    confirm: Literal["yes"]

    @field_validator("amount", "reason", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


@bp.post("/<slug>/sessions/<session_id>/<any(refund, capture, void):action>")
@login_required
def after_payment(slug: str, session_id: str, action: str) -> ResponseReturnValue:
    """The session page's refund, capture and void buttons (each asks for a confirmation)."""
    services = current_services()
    reach = Reach(account_id=current_user().account_id, environment=_mode())
    with services.db.transaction() as tx:
        project = _project(tx, slug)
        if load_session(tx, session_id, now=services.clock(), **reach).project_id != project.id:
            raise NotFound("Session not found")
    try:
        form = AfterPaymentForm.model_validate(request.form.to_dict())
        cents = None if form.amount is None else int(form.amount * 100)
        if action == "refund":
            refunds.refund(services, session_id, reach, amount_cents=cents, reason=form.reason)
        elif action == "capture":
            refunds.capture(services, session_id, reach, amount_cents=cents)
        else:
            refunds.void(services, session_id, reach)
    except ValidationError as invalid:
        notice = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in invalid.errors())
        return Response(_session_page(slug, session_id, notice=notice), status=422)
    except InvalidInput as invalid:
        return Response(_session_page(slug, session_id, notice=invalid.message), status=422)
    except Conflict as conflict:
        return Response(_session_page(slug, session_id, notice=str(conflict)), status=409)
    except GatewayUnreachable as unanswered:
        return Response(_session_page(slug, session_id, notice=str(unanswered)), status=503)
    flash(f"{action.capitalize()} requested; the gateway's answer shows here once it comes.")
    return _back("dashboard.session_page", slug=slug, session_id=session_id)


@bp.post("/<slug>/deliveries/<delivery_id>/replay")
@login_required
def replay_delivery(slug: str, delivery_id: str) -> ResponseReturnValue:
    services = current_services()
    with services.db.transaction() as tx:
        _project(tx, slug)
    view = replay(services, delivery_id, account_id=current_user().account_id, environment=_mode())
    flash(f"Delivery sent again: {view.delivery.status_code or view.delivery.error}.")
    if view.event.session_id is None:  # an event about the project: listed on its developers page
        return _back("dashboard.developers", slug=slug)
    return _back("dashboard.session_page", slug=slug, session_id=view.event.session_id)


# --- two-step sign-in ---------------------------------------------------------------------------


def _security_page(status: int = 200, **context: Any) -> Response:
    with current_services().db.transaction() as tx:
        return Response(_page("security.html", tx, None, **context), status=status)


@bp.get("/security")
@login_required
def security() -> ResponseReturnValue:
    return _security_page()


@bp.post("/security/totp")
@login_required
def totp_start() -> ResponseReturnValue:
    """A new secret, shown once; it is kept (sealed) in the session until a code enables it."""
    secret = new_totp_secret()
    sealed = current_services().sealer(TOTP_PURPOSE).seal(secret.encode())
    session[ENROL_KEY] = base64.b64encode(sealed).decode()
    return _security_page(secret=secret, uri=totp_uri(secret, current_user().email))


@bp.post("/security/totp/enable")
@login_required
def totp_enable() -> ResponseReturnValue:
    services = current_services()
    sealer = services.sealer(TOTP_PURPOSE)
    pending = session.get(ENROL_KEY)
    if pending is None:
        return _security_page(status=409, enrol_error="Start again: no secret is waiting.")
    try:
        form = CodeForm.model_validate(request.form.to_dict())
    except ValidationError:
        return _security_page(status=422, enrolling=True, enrol_error=SIX_DIGITS)
    secret = sealer.open(base64.b64decode(pending)).decode()
    with services.db.transaction() as tx:
        enabled = enable_totp(
            tx, current_user().id, secret, form.code, sealer=sealer, now=services.clock()
        )
    if not enabled:
        error = "That code does not match. Check the app's clock and enter the current code."
        return _security_page(status=422, enrolling=True, enrol_error=error)
    session.pop(ENROL_KEY)
    flash("Two-step sign-in is on: sign-in now asks for a code from your app.")
    return redirect(url_for("dashboard.security"))


@bp.post("/security/totp/disable")
@login_required
def totp_disable() -> ResponseReturnValue:
    services = current_services()
    try:
        form = CodeForm.model_validate(request.form.to_dict())
    except ValidationError:
        return _security_page(status=422, disable_error=SIX_DIGITS)
    with services.db.transaction() as tx:
        disabled = disable_totp(
            tx,
            current_user().id,
            form.code,
            sealer=services.sealer(TOTP_PURPOSE),
            now=services.clock(),
        )
    if not disabled:
        return _security_page(status=422, disable_error="That code is not right.")
    flash("Two-step sign-in is off.")
    return redirect(url_for("dashboard.security"))


# --- settings ------------------------------------------------------------------------------------


def _settings_patch(form: Any) -> dict[str, Any]:
    """The settings form -> a merge patch of the whole document (blank = the default)."""
    return {
        "display_name": form.get("display_name") or None,
        "language": form.get("language") or None,
        "require_postal_code": "require_postal_code" in form,
        "accepted_brands": form.getlist("accepted_brands"),
        "authorize_only": "authorize_only" in form,
        "max_payment_attempts": form.get("max_payment_attempts") or None,
        "webhook_events": form.getlist("webhook_events"),
        "callback_countries": [c.strip() for c in form.get("callback_countries", "").split(",")]
        if form.get("callback_countries", "").strip()
        else None,
        "widget": {
            "theme": {key: form.get(f"theme.{key}") or None for key in THEME_KEYS},
            "labels": {key: form.get(f"labels.{key}") or None for key in LABEL_KEYS},
            "fields": {key: f"fields.{key}" in form for key in OPTIONAL_FIELDS},
            "allowed_origins": form.get("allowed_origins", "").split(),
        },
    }


def _settings_page(slug: str, errors: dict[str, str], status: int = 200) -> Response:
    services = current_services()
    ttl = timedelta(minutes=services.settings.widget_ttl_minutes)
    with services.db.transaction() as tx:
        project = _project(tx, slug)
        body = _page(
            "settings.html",
            tx,
            project,
            doc=project_out(project),
            errors=errors,
            changes=setting_changes(tx, project, limit=20),
            languages=LANGUAGES,
            brands=[b.value for b in Brand],
            events=[e.value for e in OptInEvent],
            max_attempts=MAX_PAYMENT_ATTEMPTS,
            theme_keys=THEME_KEYS,
            label_keys=LABEL_KEYS,
            default_labels=DEFAULT_LABELS,
            optional_fields=OPTIONAL_FIELDS,
            preview=preview_session(tx, project, ttl=ttl, now=services.clock()),
        )
    return Response(body, status=status)


@bp.route("/<slug>/settings", methods=["GET", "POST"])
@login_required
def settings(slug: str) -> ResponseReturnValue:
    if request.method == "GET":
        return _settings_page(slug, {})
    services = current_services()
    try:
        with services.db.transaction() as tx:
            change_project(
                tx,
                _project(tx, slug),
                _settings_patch(request.form),
                actor=current_user().actor,
                now=services.clock(),
                sealer=services.sealer(WEBHOOK_SECRET_PURPOSE),
            )
    except ValidationError as error:
        errors = {
            ".".join(str(p) for p in e["loc"] if p != "[key]"): e["msg"] for e in error.errors()
        }
        return _settings_page(slug, errors, status=422)
    flash("Settings saved. The next call uses them.")
    return _back("dashboard.settings", slug=slug)


# --- developers ----------------------------------------------------------------------------------


def _developers_page(slug: str, status: int = 200, **shown_once: Any) -> Response:
    settings = current_services().settings
    base = settings.public_url.rstrip("/")
    with current_services().db.transaction() as tx:
        project = _project(tx, slug)
        body = _page(
            "developers.html",
            tx,
            project,
            keys=reports.account_keys(tx, current_user().account_id),
            deliveries=reports.recent_deliveries(tx, project, _mode()),
            gateways=reports.configured_gateways(tx, project),
            gateway_names=[g.value for g in Gateway],
            required_credentials=required_credentials,
            twilio={
                "Voice URL (A call comes in)": f"{base}/twilio/voice",
                "Status callback URL": f"{base}/twilio/status",
                "Fallback URL": f"{base}/twilio/fallback",
                "SIP domain": settings.sip_domain,
                "Phone number": settings.phone_number,
            },
            doc=project_out(project),
            **shown_once,
        )
    return Response(body, status=status)


@bp.get("/<slug>/developers")
@login_required
def developers(slug: str) -> ResponseReturnValue:
    return _developers_page(slug)


@bp.post("/<slug>/keys")
@login_required
def create_key(slug: str) -> ResponseReturnValue:
    services = current_services()
    with services.db.transaction() as tx:
        project = _project(tx, slug)
        issued = issue_key(tx, project.slug, _mode(), now=services.clock())
    return _developers_page(slug, status=201, new_key=issued.plaintext)


@bp.post("/<slug>/keys/<prefix>/revoke")
@login_required
def revoke(slug: str, prefix: str) -> ResponseReturnValue:
    services = current_services()
    with services.db.transaction() as tx:
        _project(tx, slug)
        revoke_key(tx, prefix, now=services.clock(), account_id=current_user().account_id)
    flash(f"Key {prefix}… revoked.")
    return _back("dashboard.developers", slug=slug)


@bp.post("/<slug>/webhook")
@login_required
def webhook(slug: str) -> ResponseReturnValue:
    services = current_services()
    try:
        with services.db.transaction() as tx:
            changed = change_project(
                tx,
                _project(tx, slug),
                {"webhook_url": request.form.get("webhook_url") or None},
                actor=current_user().actor,
                now=services.clock(),
                sealer=services.sealer(WEBHOOK_SECRET_PURPOSE),
            )
    except ValidationError as error:
        return _developers_page(slug, status=422, webhook_error=error.errors()[0]["msg"])
    if changed.webhook_secret:
        return _developers_page(slug, new_secret=changed.webhook_secret)
    flash("Webhook URL saved.")
    return _back("dashboard.developers", slug=slug)


@bp.post("/<slug>/webhook/rotate")
@login_required
def rotate(slug: str) -> ResponseReturnValue:
    services = current_services()
    with services.db.transaction() as tx:
        secret = rotate_webhook_secret(
            tx,
            _project(tx, slug),
            actor=current_user().actor,
            now=services.clock(),
            sealer=services.sealer(WEBHOOK_SECRET_PURPOSE),
        )
    return _developers_page(slug, new_secret=secret)


@bp.post("/<slug>/webhook/test")
@login_required
def test_event(slug: str) -> ResponseReturnValue:
    """A signed `test` event (on the project's test-mode preview session), sent now."""
    services = current_services()
    with services.db.transaction() as tx:
        project_id = _project(tx, slug).id
    try:
        delivery = send_test_event(services, project_id)
    except Conflict as conflict:
        return _developers_page(slug, status=409, webhook_error=str(conflict))
    if delivery.status_code is not None:
        flash(f"Test event sent: HTTP {delivery.status_code} in {delivery.latency_ms} ms.")
    else:
        flash(f"Test event not delivered: {delivery.error}.")
    return redirect(url_for("dashboard.developers", slug=slug, mode="test"))


@bp.post("/<slug>/gateways")
@login_required
def gateway_credentials(slug: str) -> ResponseReturnValue:
    services = current_services()
    try:
        gateway = Gateway(request.form.get("gateway", ""))
    except ValueError:
        return _developers_page(slug, status=422, gateway_error="Choose a gateway.")
    values = {
        name: request.form.get(f"credential.{name}", "").strip()
        for name in required_credentials(gateway.value)
    }
    missing = [name for name, value in values.items() if not value]
    if missing:
        return _developers_page(
            slug, status=422, gateway_error=f"{gateway.value} needs {', '.join(missing)}."
        )
    with services.db.transaction() as tx:
        set_credentials(
            tx,
            _project(tx, slug),
            gateway,
            _mode(),
            values,
            sealer=services.sealer(CREDENTIALS_PURPOSE),
            now=services.clock(),
        )
    flash(f"{gateway.value} {_mode().value} credentials saved.")
    return _back("dashboard.developers", slug=slug)


@bp.errorhandler(NotFound)
@bp.errorhandler(404)
def _not_found(error: Exception) -> tuple[str, int]:
    return render_template("dashboard/error.html", message="Not found."), 404
