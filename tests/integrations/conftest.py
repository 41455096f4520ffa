"""Fixtures for agent integrations: the app served over real HTTP (the MCP SDK's client and SSE
readers need a socket), with call state and payment jobs wired so a Twilio-behaving call pays."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from api import create_app
from ivr.callstate import CallServices, CallStates
from ivr.phone import Phone, ScriptedKeypad
from payments.jobs import ThreadJobs
from tests.conftest import Clock
from tests.ivr.conftest import PAID_BY_KEYPAD, services_on
from tests.ivr.twilio_client import make_phone

VOICE = {  # a POST /v1/sessions body for project "acme"
    "project": "acme",
    "caller": "+14155550100",
    "amount": "150.00",
    "mode": "charge",
    "gateway": "stripe",
    "description": "Two concert tickets",
}


@pytest.fixture
def services(
    database_url: str, clock: Clock, thread_pools: list[ThreadJobs[CallStates]]
) -> Iterator[CallServices]:
    """Call state in memory and payment jobs on a thread pool: `paydial serve`'s wiring."""
    yield from services_on(database_url, clock, "memory-threads", thread_pools)


@pytest.fixture
def app(services: CallServices) -> Flask:
    app = create_app(services=services)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def server_url(app: Flask) -> Iterator[str]:
    """The app on a real socket (werkzeug, a thread per request), as `paydial serve` runs it."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.port}"
    server.shutdown()
    thread.join()
    server.server_close()


@pytest.fixture
def pay_by_phone(client: FlaskClient) -> Callable[..., Phone]:
    """Call a session's SIP URI like Twilio would and pay with the approved test card."""

    def call(sip_uri: str, **kwargs: Any) -> Any:
        return make_phone(client, to=sip_uri, **kwargs).call(ScriptedKeypad(PAID_BY_KEYPAD))

    return call
