"""Fixtures shared by every test: databases (SQLite and PostgreSQL), Redis, clock, app, builders."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydantic import SecretStr
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

import gateways
from api import create_app
from gateways.base import PaymentRequest, PaymentResult
from gateways.simulator import SimulatorGateway
from ivr.callstate import CallServices, CallStates
from ivr.wiring import Runner, build_services
from paydial.migrate import upgrade
from payments.accounts import create_project, get_project_by_slug, issue_key
from payments.credentials import CREDENTIALS_PURPOSE, set_credentials
from payments.jobs import ThreadJobs
from payments.model import Environment, Gateway
from payments.outbox import WEBHOOK_SECRET_PURPOSE
from payments.projects import Changed, change_project
from payments.services import Services
from payments.settings import Settings
from payments.store import Base, PaymentAttempt, SettingChange

POSTGRES_ADMIN_URL = os.environ.get(
    "PAYDIAL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_TEST_URL = os.environ.get("PAYDIAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_SERVICES = os.environ.get("PAYDIAL_REQUIRE_SERVICES") == "1"

pytest_plugins = ["tests.leakscan"]

TEST_SECRET_KEY = "test-secret-key-for-paydial-tests-only"
TEST_TWILIO_TOKEN = "test-twilio-auth-token"
PUBLIC_URL = "https://paydial.example.com"

if TYPE_CHECKING:  # the plugin itself is loaded by pytest (pytest_plugins)
    from tests.leakscan import LeakScan


def service_missing(reason: str) -> None:
    """Skip when a backing service is absent, unless CI demands every service."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (PAYDIAL_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@dataclass
class Clock:
    """Time that only moves when a test says so."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 21, 12, 0, tzinfo=UTC))


# --- databases -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file, copied for each test (migrations run once, not per test)."""
    path = tmp_path_factory.mktemp("db") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


def scratch_postgres(prefix: str) -> Iterator[str]:
    """An empty PostgreSQL database, dropped when the generator is closed."""
    admin = make_url(POSTGRES_ADMIN_URL)
    if not port_open(admin.host or "127.0.0.1", admin.port or 5432):
        service_missing(f"PostgreSQL is not reachable at {admin.host}:{admin.port}")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield admin.set(database=name).render_as_string(hide_password=False)
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test run, dropped afterwards."""
    for url in scratch_postgres("paydial_test"):
        upgrade(url)
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, leak_scan: LeakScan
) -> Iterator[str]:
    """Every test that touches the database runs on SQLite and on PostgreSQL.

    When the test ends, its rows are searched for card data (tests/leakscan.py).
    """
    if request.param == "sqlite":
        path = tmp_path / "paydial.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("postgres_url")
        engine = create_engine(url)
        with engine.begin() as connection:  # DELETE beats TRUNCATE on tables this small
            for table in reversed(Base.metadata.sorted_tables):
                connection.execute(table.delete())
        engine.dispose()
    yield url
    leak_scan.scan_database(url, request.node.nodeid)


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, leak_scan: LeakScan) -> Iterator[str]:
    """A clean Redis database for the test; searched for card data before it is flushed."""
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        service_missing(f"Redis is not reachable at {REDIS_TEST_URL}")
    client.flushdb()
    yield REDIS_TEST_URL
    leak_scan.scan_redis(client, request.node.nodeid)
    client.flushdb()
    client.close()


# --- gateway emulators -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def localstripe_url() -> Iterator[str]:
    """A real localstripe process: the Stripe SDK talks to it over HTTP like to api.stripe.com."""
    executable = shutil.which("localstripe")
    if executable is None:
        service_missing("localstripe is not installed (pip install -e '.[test]')")
    port = free_port()
    process = subprocess.Popen(
        [executable, "--port", str(port), "--from-scratch"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("localstripe did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=60)


# --- the application ---------------------------------------------------------------------------


def make_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "public_url": PUBLIC_URL,
        "secret_key": SecretStr(TEST_SECRET_KEY),
        "twilio_auth_token": SecretStr(TEST_TWILIO_TOKEN),
        "phone_number": "+15005550006",
        "sip_domain": "pay.sip.example.com",
        # The phones here pause a hundredth of Twilio's time (pause_scale): a hold poll waits for
        # its job's news about as briefly (tests/ivr/test_hold_wait.py waits for real).
        "hold_wait_seconds": 0.05,
    }
    values.update(overrides)
    return Settings.model_validate(values)


def close_services(services: Services) -> None:
    """Let the jobs on the services' own thread pool finish, then close the database. Disposed
    first, the engine would leave a job's connection, handed back later, open until the garbage
    collector finds it (a ResourceWarning that fails whichever test is running then)."""
    if isinstance(services.jobs, ThreadJobs):
        services.jobs.shutdown()
    services.db.dispose()


@pytest.fixture
def services(database_url: str, clock: Clock) -> Iterator[CallServices]:
    services = build_services(make_settings(database_url), clock=clock)
    yield services
    close_services(services)


@pytest.fixture
def thread_pools() -> Iterator[list[ThreadJobs[CallStates]]]:
    """The thread pools a test's Services run jobs on; shut down (their jobs done) after it."""
    pools: list[ThreadJobs[CallStates]] = []
    yield pools
    for pool in pools:
        pool.shutdown()


def tuned(services: CallServices, *, runner: Runner | None = None, **settings: Any) -> CallServices:
    """The same database, clock and call state with some settings changed, through the builder;
    the same job runner unless `runner` makes another."""
    return build_services(
        services.settings.model_copy(update=settings),
        db=services.db,
        clock=services.clock,
        callstates=services.callstates,
        runner=runner or (lambda _: services.jobs),
    )


@pytest.fixture
def app(services: Services) -> Flask:
    app = create_app(services=services)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def make_project(services: Services) -> Callable[..., str]:
    """Create a project (and its account); returns the project id."""

    def make(slug: str, account: str | None = None) -> str:
        with services.db.transaction() as tx:
            return create_project(tx, slug, now=services.clock(), account_name=account).id

    return make


@pytest.fixture
def make_key(services: Services) -> Callable[..., str]:
    """A plaintext API key for the account owning `slug`."""

    def make(slug: str, mode: str = "test") -> str:
        with services.db.transaction() as tx:
            return issue_key(tx, slug, Environment(mode), now=services.clock()).plaintext

    return make


@pytest.fixture
def merchant(make_project: Callable[..., str], make_key: Callable[..., str]) -> dict[str, str]:
    """A project 'acme' with one test and one live key, as auth headers."""
    make_project("acme", "Acme Inc")
    return {
        "test": f"Bearer {make_key('acme', 'test')}",
        "live": f"Bearer {make_key('acme', 'live')}",
    }


def store_live_credentials(
    services: Services, slug: str, gateway: Gateway = Gateway.STRIPE
) -> None:
    """Live credentials for a project, so live sessions may be created (they are never used)."""
    with services.db.transaction() as tx:
        set_credentials(
            tx,
            get_project_by_slug(tx, slug),
            gateway,
            Environment.LIVE,
            {"secret_key": "sk_live_never_called"},
            sealer=services.sealer(CREDENTIALS_PURPOSE),
            now=services.clock(),
        )


@pytest.fixture
def live_merchant(services: Services, merchant: dict[str, str]) -> dict[str, str]:
    """`merchant`, whose project also has live credentials for every gateway (required for live
    sessions; never used: these tests do not pay)."""
    for gateway in Gateway:
        store_live_credentials(services, "acme", gateway)
    return merchant


def set_project(services: Services, slug: str, **patch: object) -> Changed:
    """Change a project's settings through the core, as the API, the CLI and the dashboard do."""
    with services.db.transaction() as tx:
        return change_project(
            tx,
            get_project_by_slug(tx, slug),
            patch,
            actor="test",
            now=services.clock(),
            sealer=services.sealer(WEBHOOK_SECRET_PURPOSE),
        )


def setting_change_rows(services: Services) -> list[tuple[Any, ...]]:
    """The settings audit log as (actor, setting, old, new), oldest first."""
    with services.db.transaction() as tx:
        rows = tx.execute(
            select(
                SettingChange.actor, SettingChange.setting, SettingChange.old, SettingChange.new
            ).order_by(SettingChange.id)
        )
        return [tuple(row) for row in rows]


def attempt_rows(services: Services, session_id: str) -> list[tuple[int, str]]:
    """A session's payment attempts as (number, state), in order."""
    with services.db.transaction() as tx:
        rows = tx.execute(
            select(PaymentAttempt.number, PaymentAttempt.state)
            .where(PaymentAttempt.session_id == session_id)
            .order_by(PaymentAttempt.number)
        )
        return [(number, state) for number, state in rows]


def process_env(database_url: str, redis_url: str, **settings: str) -> dict[str, str]:
    """The environment a Procfile process (web or worker) of this test run is configured by."""
    return os.environ | {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "PAYDIAL_SECRET_KEY": TEST_SECRET_KEY,
        "TWILIO_AUTH_TOKEN": TEST_TWILIO_TOKEN,
        "PAYDIAL_PUBLIC_URL": PUBLIC_URL,
        **settings,
    }


@pytest.fixture(scope="session", autouse=True)
def paydial_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Secrets the embedded setup generates go to a scratch PAYDIAL_HOME, never the user's own."""
    home = tmp_path_factory.mktemp("paydial-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PAYDIAL_HOME", str(home))
        yield home


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """`paydial` commands run in a scratch directory against the test's database."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("PAYDIAL_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TEST_TWILIO_TOKEN)
    return database_url


def count_gateway_calls(monkeypatch: pytest.MonkeyPatch, *, delay: float = 0.0) -> list[str]:
    """Idempotency keys of every charge or tokenize reaching the simulated gateway, in order.

    `delay` makes each call take that long, to hold a race open.
    """
    calls: list[str] = []

    class CountingSimulator(SimulatorGateway):
        def charge(self, request: PaymentRequest) -> PaymentResult:
            calls.append(request.idempotency_key)
            time.sleep(delay)
            return super().charge(request)

        def tokenize(self, request: PaymentRequest) -> PaymentResult:
            calls.append(request.idempotency_key)
            time.sleep(delay)
            return super().tokenize(request)

    monkeypatch.setattr(gateways, "SimulatorGateway", CountingSimulator)
    return calls
