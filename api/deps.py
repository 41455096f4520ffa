"""How views reach the process's services (set up once by create_app)."""

from __future__ import annotations

from flask import current_app

from ivr.services import Services

EXTENSION = "paydial"


def current_services() -> Services:
    services: Services = current_app.extensions[EXTENSION]
    return services
