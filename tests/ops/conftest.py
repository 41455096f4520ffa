"""Builders for the operations tests: sessions via the API, webhook receivers, tuned services."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer

from api import create_app
from ivr.callstate import CallServices
from ivr.wiring import build_services
from payments.services import PaymentJob, Services
from tests.conftest import Clock, make_settings, set_project

if TYPE_CHECKING:  # the plugin itself is loaded by pytest (pytest_plugins)
    from tests.leakscan import LeakScan

VOICE_SESSION = {
    "project": "acme",
    "caller": "+14155550100",
    "amount": "25.00",
    "mode": "charge",
    "gateway": "stripe",
    "description": "Order 1042",
}


def app_for(services: CallServices) -> Flask:
    app = create_app(services=services)
    app.config["TESTING"] = True
    return app


class QueuedJobs:
    """A job queue no worker has taken from yet (what RQ holds between enqueue and a worker).

    The operations tests drive sending themselves (`deliver_due`, `deliver_now`); the jobs the
    app hands over at commit wait here, so nothing sends behind a test's back.
    """

    def __init__(self) -> None:
        self.payments: list[PaymentJob] = []
        self.deliveries: list[str] = []
        self.operations: list[int] = []

    def submit(self, job: PaymentJob) -> None:
        self.payments.append(job)

    def deliver(self, event_id: str) -> None:
        self.deliveries.append(event_id)

    def operate(self, operation_id: int) -> None:
        self.operations.append(operation_id)


@pytest.fixture
def queued() -> QueuedJobs:
    return QueuedJobs()


def queued_services(database_url: str, clock: Clock, queued: QueuedJobs) -> Iterator[CallServices]:
    """Services whose jobs wait in `queued`."""
    services = build_services(make_settings(database_url), clock=clock, runner=lambda _: queued)
    yield services
    services.db.dispose()


@pytest.fixture
def services(database_url: str, clock: Clock, queued: QueuedJobs) -> Iterator[CallServices]:
    """The operations tests' Services: the jobs they hand over wait in `queued`."""
    yield from queued_services(database_url, clock, queued)


@pytest.fixture
def app(services: CallServices) -> Flask:
    return app_for(services)


@pytest.fixture
def receiver(request: pytest.FixtureRequest, leak_scan: LeakScan) -> Iterator[HTTPServer]:
    """A real HTTP server in a thread standing in for the merchant's webhook endpoint.

    Every body it received is searched for card data when the test ends (tests/leakscan.py).
    """
    server = HTTPServer(threaded=True)
    server.start()
    yield server
    for received, _ in server.log:
        leak_scan.check("webhook body", request.node.nodeid, received.get_data(as_text=True))
    server.clear()
    if server.is_running():
        server.stop()


@pytest.fixture
def hook_secret(services: Services, merchant: dict[str, str], receiver: HTTPServer) -> str:
    """Point acme's webhooks at the receiver; returns the `whsec_` secret."""
    secret = set_project(services, "acme", webhook_url=receiver.url_for("/hooks")).webhook_secret
    assert secret is not None
    return secret


@pytest.fixture
def opt_in(services: Services) -> Callable[..., None]:
    def set_events(*events: str, slug: str = "acme") -> None:
        set_project(services, slug, webhook_events=list(events))

    return set_events


@pytest.fixture
def new_session(client: FlaskClient, merchant: dict[str, str]) -> Callable[..., str]:
    """Create a voice session through the API; returns its id."""

    def create(mode: str = "test", **fields: Any) -> str:
        response = client.post(
            "/v1/sessions", json=VOICE_SESSION | fields, headers={"Authorization": merchant[mode]}
        )
        assert response.status_code == 201, response.get_json()
        session_id: str = response.get_json()["session_id"]
        return session_id

    return create
