"""The Flask application and the merchant edge. `create_app` is the only place things are wired."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from api import errors
from api.deps import EXTENSION
from ivr.services import Services
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
    errors.init_app(app)
    from ivr.jobs import wire_calls

    wire_calls(services)

    from api.meta import bp as meta_bp
    from api.sessions import bp as sessions_bp
    from api.widget import bp as widget_bp
    from ivr.webhooks import bp as twilio_bp

    app.register_blueprint(meta_bp)
    app.register_blueprint(sessions_bp)
    app.register_blueprint(widget_bp)
    app.register_blueprint(twilio_bp)
    return app
