"""Fixtures for the phone call: the app with call state and jobs wired, sessions, phones.

`call_backend` runs every call test twice per database: the embedded setup (call state in
memory, gateway jobs on a thread pool) and the scaled-out one (call state in Redis, jobs run
inline at the seam where RQ would take them).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

import gateways
from api import create_app
from gateways.base import PaymentRequest, PaymentResult
from gateways.simulator import SimulatorGateway
from ivr.callstate import CallStates, MemoryCallStateStore, callstate_from_url
from ivr.charge import run_payment_job
from ivr.phone import Phone
from payments.delivery import deliver_now
from payments.jobs import ThreadJobs
from payments.refunds import run_operation
from payments.services import PaymentJob, Services
from tests.conftest import TEST_SECRET_KEY, set_project
from tests.ivr.twilio_client import make_phone

APPROVED = "4242424242424242"
AMEX = "378282246310005"
DECLINED = "4000000000000002"
EXPIRY = "1230"  # December 2030; the test clock is in November 2026
CVV = "987"
AMEX_CVV = "6543"


def gateway_holding(
    monkeypatch: pytest.MonkeyPatch, when_called: Callable[[], object]
) -> threading.Event:
    """The simulated gateway runs `when_called` as a charge arrives, then holds the charge until
    the returned event is set: a payment job is at the gateway (card taken, attempt recorded)."""
    release = threading.Event()

    class HeldSimulator(SimulatorGateway):
        def charge(self, request: PaymentRequest) -> PaymentResult:
            when_called()
            release.wait(timeout=60)
            return super().charge(request)

    monkeypatch.setattr(gateways, "SimulatorGateway", HeldSimulator)
    return release


class InlineJobs:
    """Runs each job at once, in the caller's thread (RQ's place in the Redis setup)."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def submit(self, job: PaymentJob) -> None:
        run_payment_job(self._services, job)

    def deliver(self, event_id: str) -> None:
        deliver_now(self._services, event_id)

    def operate(self, operation_id: int) -> None:
        run_operation(self._services, operation_id)


def wire_backend(services: Services, kind: str, redis_url: str | None = None) -> Iterator[str]:
    """Give `services` call state and jobs for one backend; shuts the thread pool down after."""
    threads: ThreadJobs | None = None
    if kind == "memory-threads":
        services.callstates = CallStates(MemoryCallStateStore(), TEST_SECRET_KEY)
        services.jobs = threads = ThreadJobs(services, run_payment_job)
    else:
        assert redis_url is not None
        services.callstates = callstate_from_url(redis_url, TEST_SECRET_KEY)
        services.jobs = InlineJobs(services)
    yield kind
    if threads is not None:
        threads.shutdown()


@pytest.fixture(params=["memory-threads", pytest.param("redis-inline", marks=pytest.mark.redis)])
def call_backend(request: pytest.FixtureRequest, services: Services) -> Iterator[str]:
    """Wire call state and jobs onto `services`, once per backend."""
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis-inline" else None
    yield from wire_backend(services, request.param, redis_url)


@pytest.fixture
def app(call_backend: str, services: Services) -> Flask:
    app = create_app(services=services)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def new_session(client: FlaskClient, merchant: dict[str, str]) -> Callable[..., dict[str, Any]]:
    """Create a voice session for project 'acme' through the API; returns the 201 body."""

    def make(**fields: Any) -> dict[str, Any]:
        body = {
            "project": "acme",
            "caller": "+14155550100",
            "amount": "150.00",
            "mode": "charge",
            "gateway": "stripe",
            "description": "Two concert tickets",
            **fields,
        }
        response = client.post(
            "/v1/sessions", json=body, headers={"Authorization": merchant["test"]}
        )
        assert response.status_code == 201, response.get_json()
        created: dict[str, Any] = response.get_json()
        return created

    return make


@pytest.fixture
def read_session(client: FlaskClient, merchant: dict[str, str]) -> Callable[[str], dict[str, Any]]:
    def read(session_id: str) -> dict[str, Any]:
        response = client.get(
            f"/v1/sessions/{session_id}", headers={"Authorization": merchant["test"]}
        )
        assert response.status_code == 200
        found: dict[str, Any] = response.get_json()
        return found

    return read


@pytest.fixture
def phone(client: FlaskClient) -> Callable[..., Phone]:
    """A Twilio-behaving call into the app (`from_`, `to`, `extra` as Twilio would send them)."""

    def make(**kwargs: Any) -> Phone:
        return make_phone(client, **kwargs)

    return make


@pytest.fixture
def configure_project(services: Services, merchant: dict[str, str]) -> Callable[..., None]:
    """Change project 'acme' settings (require_postal_code, max_payment_attempts, ...)."""

    def configure(**changes: Any) -> None:
        set_project(services, "acme", **changes)

    return configure
