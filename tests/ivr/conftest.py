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
import redis
from flask import Flask
from flask.testing import FlaskClient

import gateways
from api import create_app
from gateways.base import PaymentRequest, PaymentResult
from gateways.simulator import SimulatorGateway
from ivr.callstate import (
    CallServices,
    CallStates,
    CallStateStore,
    MemoryCallStateStore,
    RedisCallStateStore,
)
from ivr.charge import run_payment_job
from ivr.phone import CallResult, Phone, ScriptedKeypad
from ivr.wiring import Runner, build_services
from payments.delivery import deliver_now
from payments.jobs import RQJobs, ThreadJobs
from payments.refunds import run_operation
from payments.services import PaymentJob, Services
from tests.conftest import TEST_SECRET_KEY, Clock, close_services, make_settings, set_project
from tests.ivr.twilio_client import make_phone

APPROVED = "4242424242424242"
AMEX = "378282246310005"
DECLINED = "4000000000000002"
EXPIRY = "1230"  # December 2030; the test clock is in November 2026
CVV = "987"
AMEX_CVV = "6543"
PAID_BY_KEYPAD = [APPROVED + "#", EXPIRY, CVV, "1"]  # card number, expiry, code, "1" to confirm


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


class Watched:
    """The call state's real store, noting when a hold poll begins to wait on it."""

    def __init__(self, store: CallStateStore) -> None:
        self._store = store
        self.waiting = threading.Event()

    def load(self, key: str) -> bytes | None:
        return self._store.load(key)

    def load_many(self, *keys: str) -> list[bytes | None]:
        return self._store.load_many(*keys)

    def save(self, key: str, value: bytes, ttl: int) -> None:
        self._store.save(key, value, ttl)

    def take(self, key: str) -> bytes | None:
        return self._store.take(key)

    def delete(self, *keys: str) -> None:
        self._store.delete(*keys)

    def claim(self, key: str, ttl: int) -> bool:
        return self._store.claim(key, ttl)

    def save_and_wake(self, key: str, value: bytes, ttl: int, wake: str) -> None:
        self._store.save_and_wake(key, value, ttl, wake)

    def wait(self, wake: str, timeout: float) -> bool:
        self.waiting.set()
        return self._store.wait(wake, timeout)


class InlineJobs:
    """Runs each job at once, in the caller's thread (RQ's place in the Redis setup)."""

    def __init__(self, services: CallServices) -> None:
        self._services = services

    def submit(self, job: PaymentJob) -> None:
        run_payment_job(self._services, job)

    def deliver(self, event_id: str) -> None:
        deliver_now(self._services, event_id)

    def operate(self, operation_id: int) -> None:
        run_operation(self._services, operation_id)


def services_on(
    database_url: str,
    clock: Clock,
    kind: str,
    pools: list[ThreadJobs[CallStates]],
    redis_url: str | None = None,
    *,
    watch: Callable[[CallStateStore], CallStateStore] = lambda store: store,
    **overrides: Any,
) -> Iterator[CallServices]:
    """Services wired for one backend, "<call state>-<jobs>": call state in memory or Redis, jobs
    on a thread pool (kept in `pools`), inline, or queued in RQ for a worker. `watch` may wrap
    the call state's store; `overrides` change settings."""
    where, runs = kind.split("-")
    assert redis_url is not None or (where, runs) == ("memory", "threads")

    def threads(services: CallServices) -> ThreadJobs[CallStates]:
        pools.append(ThreadJobs(services, run_payment_job))
        return pools[-1]

    runners: dict[str, Runner] = {
        "threads": threads,
        "inline": InlineJobs,
        "rq": lambda _: RQJobs(str(redis_url)),
    }
    settings = make_settings(
        database_url, redis_url=redis_url if runs == "rq" else None, **overrides
    )
    store = (
        RedisCallStateStore(redis.Redis.from_url(str(redis_url)))
        if where == "redis"
        else MemoryCallStateStore()
    )
    services = build_services(
        settings,
        clock=clock,
        callstates=CallStates(watch(store), TEST_SECRET_KEY, waiters=settings.hold_waiters),
        runner=runners[runs],
    )
    yield services
    for pool in pools:  # the pools' jobs use this database: they end before it closes
        pool.shutdown()
    close_services(services)


@pytest.fixture(params=["memory-threads", pytest.param("redis-inline", marks=pytest.mark.redis)])
def call_backend(request: pytest.FixtureRequest) -> str:
    """The backend of call state and jobs (services_on): every call test runs once per backend."""
    kind: str = request.param
    return kind


@pytest.fixture
def call_settings() -> dict[str, Any]:
    """Settings the call tests' Services change; a module overrides this to change some."""
    return {}


@pytest.fixture
def watch_store() -> Callable[[CallStateStore], CallStateStore]:
    """What wraps the call tests' call-state store; a module overrides this to watch it."""
    return lambda store: store


@pytest.fixture
def services(
    request: pytest.FixtureRequest,
    database_url: str,
    clock: Clock,
    call_backend: str,
    thread_pools: list[ThreadJobs[CallStates]],
    call_settings: dict[str, Any],
    watch_store: Callable[[CallStateStore], CallStateStore],
) -> Iterator[CallServices]:
    """The call tests' Services, wired for `call_backend`."""
    redis_url = None if call_backend == "memory-threads" else request.getfixturevalue("redis_url")
    yield from services_on(
        database_url,
        clock,
        call_backend,
        thread_pools,
        redis_url,
        watch=watch_store,
        **call_settings,
    )


class KeypadWithAnOutage:
    """Keys `entries`, one a prompt; a store goes down (`down`) once `keyed` of them are in.
    With none left, the caller hangs up."""

    def __init__(self, entries: list[str], *, keyed: int, down: Callable[[], object]) -> None:
        self.entries = list(entries)
        self.keyed = keyed
        self.down = down
        self.pressed = 0

    def press(self, prompt: list[str]) -> str | None:
        if self.pressed == self.keyed:
            self.down()
        self.pressed += 1
        return self.entries.pop(0) if self.entries else None


# Backends whose payment job runs beside the call, so the caller holds while the gateway works.
BESIDE_THE_CALL = ["memory-threads", pytest.param("redis-threads", marks=pytest.mark.redis)]


@pytest.fixture
def pay_through_an_outage(
    monkeypatch: pytest.MonkeyPatch,
    phone: Callable[..., Phone],
    thread_pools: list[ThreadJobs[CallStates]],
) -> Callable[..., CallResult]:
    """Pay on a call whose store goes down (`down`) as the charge reaches the gateway, which
    holds it; once the call is over the store comes back (`up`), the charge is let go and its job
    ends. Takes a session's SIP URI; returns what the caller heard and dialed."""

    def pay(sip_uri: str, *, down: Callable[[], object], up: Callable[[], object]) -> CallResult:
        release = gateway_holding(monkeypatch, down)
        call = phone(to=sip_uri, pause_scale=1.0)  # the hold polls at Twilio's pace
        try:
            return call.call(ScriptedKeypad(PAID_BY_KEYPAD))
        finally:
            up()
            release.set()
            for pool in thread_pools:
                pool.shutdown()

    return pay


@pytest.fixture
def app(services: CallServices) -> Flask:
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
