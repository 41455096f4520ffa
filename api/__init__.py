"""The Flask application and the merchant edge. `create_app` is the only place things are wired."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from api import errors, limits
from api.idempotency import purge_expired
from ivr.extension import EXTENSION
from ivr.services import Services
from ivr.sweeps import CORE_TASKS, Task
from paydial import logs
from paydial.settings import Settings

MAX_REQUEST_BYTES = 1024 * 1024


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> Flask:
    """Build the app from settings (read from the environment when not given)."""
    if services is None:
        services = Services.from_settings((settings or Settings()).with_local_secrets(Path.cwd()))
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]  # DefaultJSONProvider has it
    app.extensions[EXTENSION] = services
    logs.configure(json_logs=services.settings.json_logs, level=services.settings.log_level)
    logs.init_app(app)
    errors.init_app(app)
    limits.init_app(app)
    from ivr.jobs import wire_calls

    wire_calls(services)

    from api.deliveries import bp as deliveries_bp
    from api.meta import bp as meta_bp
    from api.sessions import bp as sessions_bp
    from api.widget import bp as widget_bp
    from ivr.webhooks import bp as twilio_bp

    app.register_blueprint(meta_bp)
    app.register_blueprint(sessions_bp)
    app.register_blueprint(widget_bp)
    app.register_blueprint(twilio_bp)
    app.register_blueprint(deliveries_bp)
    return app


def _purge_idempotency_keys(services: Services) -> int:
    with services.db.transaction() as tx:
        return purge_expired(tx, services.clock())


def maintenance_tasks() -> dict[str, Task]:
    """The core's periodic work plus the edge's own: forgetting expired idempotency keys."""
    return {**CORE_TASKS, "purge_idempotency_keys": _purge_idempotency_keys}
