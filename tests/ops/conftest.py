"""Builders for the operations tests: sessions via the API, webhook receivers, tuned services."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer

from api import create_app
from payments.services import PaymentJob, Services
from tests.conftest import set_project

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


def tuned(services: Services, **settings: Any) -> Services:
    """The same database and clock with some settings changed."""
    return dataclasses.replace(services, settings=services.settings.model_copy(update=settings))


def app_for(services: Services) -> Flask:
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
def queued(services: Services) -> QueuedJobs:
    services.jobs = jobs = QueuedJobs()
    return jobs


@pytest.fixture
def app(queued: QueuedJobs, services: Services) -> Flask:
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
