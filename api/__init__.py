"""The Flask application and the merchant edge. `create_app` is the only place things are wired.

Errors: RequestValidationError (errors.py) carries pydantic-shaped items to the one 422 renderer;
everything else the API answers with is translated from the core's tree (payments/__init__.py).
"""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from api import dashboard, errors, limits, request_log, validation
from api.extension import EXTENSION
from api.idempotency import purge_expired
from ivr.callstate import CallServices, CallStates
from ivr.hangup import close_vanished_calls
from ivr.wiring import build_services
from payments import logs
from payments.services import Services
from payments.settings import Settings
from payments.sweeps import CORE_TASKS, Task

MAX_REQUEST_BYTES = 1024 * 1024


def create_app(settings: Settings | None = None, *, services: CallServices | None = None) -> Flask:
    """Build the app from settings (read from the environment when not given), or around the
    Services `ivr.wiring.build_services` made."""
    if services is None:
        services = build_services((settings or Settings()).with_local_secrets())
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    if services.settings.trusted_proxies:
        # https://werkzeug.palletsprojects.com/en/stable/middleware/proxy_fix/
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=services.settings.trusted_proxies
        )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # DefaultJSONProvider has it
    app.extensions[EXTENSION] = services
    logs.configure(json_logs=services.settings.json_logs, level=services.settings.log_level)
    request_log.init_app(app)
    errors.init_app(app)
    validation.init_app(app)

    from api import deliveries, events, meta, projects, refunds, sessions, voice, widget
    from api.integrations import mcp, retell, vapi

    for routes in (meta, sessions, refunds, projects, widget, voice, deliveries, events):
        app.register_blueprint(routes.bp)
    for agents in (mcp, retell, vapi):  # the agent platforms' endpoints
        app.register_blueprint(agents.bp)
    dashboard.init_app(app, services)
    # after the blueprints: it wraps the widget's charge view
    limits.init_app(app, unlimited=[voice.bp])
    return app


def _purge_idempotency_keys(services: Services) -> int:
    with services.db.transaction() as tx:
        return purge_expired(tx, services.clock())


def maintenance_tasks() -> dict[str, Task[CallStates]]:
    """The core's periodic work plus the edges' own: closing calls whose hang-up went unheard,
    forgetting expired idempotency keys."""
    return {
        **CORE_TASKS,
        "close_vanished_calls": close_vanished_calls,
        "purge_idempotency_keys": _purge_idempotency_keys,
    }
