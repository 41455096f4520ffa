"""The merchant dashboard at /dashboard: server-rendered pages for an account's signed-in users.

Security, in one place: the session is Flask's signed cookie (HttpOnly, SameSite=Lax, Secure
unless the service runs on http://127.0.0.1 or localhost) keyed from PAYDIAL_SECRET_KEY, with an
idle timeout checked on the server's clock; every POST carries a Flask-WTF CSRF token; sign-in
failures are throttled per email and per address (payments.users); a user reaches only their
account's projects, anything else is a 404 as on the API.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import wraps
from typing import ParamSpec, TypeVar

from flask import Blueprint, Flask, Response, g, redirect, request, session, url_for
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask.typing import ResponseReturnValue
from flask.wrappers import Request
from flask_wtf.csrf import CSRFProtect

from api.extension import current_services
from payments.services import Services
from payments.users import get_user

P = ParamSpec("P")
R = TypeVar("R")

IDLE_TIMEOUT = timedelta(minutes=30)
SECOND_FACTOR_TIMEOUT = timedelta(minutes=5)  # between the right password and the code
COOKIE_NAME = "paydial_dashboard"
LOCAL_HTTP = ("http://127.0.0.1", "http://localhost")
csrf = CSRFProtect()

bp = Blueprint(
    "dashboard",
    __name__,
    url_prefix="/dashboard",
    template_folder="templates",
    static_folder="static",
)


class DashboardSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie session, opened only for a request carrying the cookie: every API
    request and Twilio webhook would otherwise build a signing serializer for nothing."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if "HTTP_COOKIE" not in request.environ or self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)


@dataclass(frozen=True)
class User:
    id: str
    account_id: str
    email: str
    second_factor: bool

    @property
    def actor(self) -> str:
        return f"dashboard {self.email}"


def init_app(app: Flask, services: Services) -> None:
    """Cookie, CSRF and the blueprint; the cookie key is derived from PAYDIAL_SECRET_KEY."""
    secret = services.secrets.secret_key.encode()
    app.secret_key = hmac.new(secret, b"dashboard-session", hashlib.sha256).hexdigest()
    app.session_interface = DashboardSessions()
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE_NAME,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=not services.settings.public_url.startswith(LOCAL_HTTP),
        SESSION_COOKIE_PATH="/dashboard",
        PERMANENT_SESSION_LIFETIME=IDLE_TIMEOUT,
        WTF_CSRF_CHECK_DEFAULT=False,  # only the dashboard's forms; the API uses bearer keys
    )
    csrf.init_app(app)
    from api.dashboard import views  # noqa: F401  # registers the pages on bp

    app.register_blueprint(bp)


@bp.before_request
def _protect() -> None:
    if request.method == "POST":
        csrf.protect()


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    )
    return response


@bp.context_processor
def _helpers() -> dict[str, Callable[..., str]]:
    def this_page(**changes: object) -> str:
        """This page's URL with some query values changed (the mode, the page number)."""
        values = request.args.to_dict() | (request.view_args or {}) | changes
        return url_for(request.endpoint or "dashboard.home", **values)

    return {
        "mode_url": lambda mode: this_page(mode=mode),
        "page_url": lambda page: this_page(page=page),
    }


def start_session(user_id: str, now: datetime) -> None:
    session.clear()
    session.permanent = True
    session["user"] = user_id
    session["seen"] = now.timestamp()


def await_second_factor(user_id: str, now: datetime) -> None:
    """The password was right; the session is not signed in until the code is."""
    session.clear()
    session["second_factor_user"] = user_id
    session["second_factor_since"] = now.timestamp()


def second_factor_user(now: datetime) -> str | None:
    """The user whose code is awaited, unless the password was given too long ago."""
    user_id, since = session.get("second_factor_user"), session.get("second_factor_since")
    if user_id is None or since is None:
        return None
    if now.timestamp() - float(since) > SECOND_FACTOR_TIMEOUT.total_seconds():
        session.clear()
        return None
    return str(user_id)


def _signed_in_user() -> User | None:
    """The session's user, unless the session has been idle too long (then it ends)."""
    services = current_services()
    now = services.clock()
    user_id, seen = session.get("user"), session.get("seen")
    if user_id is None or seen is None:
        return None
    if now.timestamp() - float(seen) > IDLE_TIMEOUT.total_seconds():
        session.clear()
        return None
    with services.db.transaction() as tx:
        row = get_user(tx, user_id)
        if row is None:
            session.clear()
            return None
        user = User(row.id, row.account_id, row.email, row.totp_secret_sealed is not None)
    session["seen"] = now.timestamp()
    return user


def login_required(view: Callable[P, R]) -> Callable[P, R | ResponseReturnValue]:
    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | ResponseReturnValue:
        user = _signed_in_user()
        if user is None:
            return redirect(url_for("dashboard.login", next=request.path))
        g.user = user
        return view(*args, **kwargs)

    return wrapper


def current_user() -> User:
    user: User = g.user
    return user
