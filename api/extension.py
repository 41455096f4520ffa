"""Where a Flask app keeps the process's Services: the core's Twilio blueprint and the API's views
both read them from here, so the core never imports the API edge to find them."""

from __future__ import annotations

from flask import current_app

from ivr.callstate import CallServices

EXTENSION = "paydial"  # create_app stores the Services at app.extensions[EXTENSION]


def current_services() -> CallServices:
    services: CallServices = current_app.extensions[EXTENSION]
    return services
