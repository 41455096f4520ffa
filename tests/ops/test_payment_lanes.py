"""Payments never wait: their own queue and threads in every `paydial worker`; Redis drops survived.

Real processes throughout, as in tests/ops/test_exactly_once.py: the Procfile's `paydial worker`
on the real RQ queues, Stripe's SDK against localstripe behind a TCP hop the test controls, and
the phone call through the app with Twilio's signed webhooks.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ivr import flow
from ivr.callstate import callstate_from_url
from ivr.phone import Phone, ScriptedKeypad
from ivr.wiring import build_services
from payments.accounts import get_project_by_slug
from payments.credentials import CREDENTIALS_PURPOSE, set_credentials
from payments.jobs import RQJobs
from payments.model import Environment, Gateway
from payments.services import PaymentJob, Services
from payments.store import WebhookEvent
from tests.conftest import (
    PUBLIC_URL,
    TEST_SECRET_KEY,
    TEST_TWILIO_TOKEN,
    Clock,
    attempt_rows,
    process_env,
    set_project,
)
from tests.ivr.conftest import APPROVED, CVV, EXPIRY
from tests.ivr.twilio_client import flask_transport
from tests.leakscan import LeakScan
from tests.ops.conftest import VOICE_SESSION, app_for
from tests.ops.test_exactly_once import STRIPE_KEY, HeldGateway, session_status
from tests.ops.test_faults import Outage

pytestmark = pytest.mark.redis

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 60.0  # seconds for a worker to start, or a held-up thing to happen, on a loaded machine
SIDE_BY_SIDE = 8  # slow payments one worker process must have at the gateway at once
QUEUED_WEBHOOKS = 300
ENDPOINT_LIMIT = 4  # PAYDIAL_WEBHOOK_CONCURRENCY's default


@pytest.fixture
def clock() -> Clock:
    """Now: the worker reads the real clock, and the sessions must not have expired for it."""
    return Clock(datetime.now(UTC))


def start_worker(
    database_url: str, redis_url: str, log: Path, *args: str
) -> subprocess.Popen[bytes]:
    """The Procfile's `worker` process; the gateway timeout outlasts whatever the test holds."""
    env = process_env(database_url, redis_url, PAYDIAL_GATEWAY_TIMEOUT=str(DEADLINE * 2))
    command = [str(Path(sys.executable).with_name("paydial")), "worker", *args]
    with log.open("wb") as output:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)


@contextlib.contextmanager
def running(worker: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """Stop the worker as `kill -TERM` does (it finishes its jobs first); kill it if it hangs."""
    try:
        yield worker
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def eventually(condition: Callable[[], bool], timeout: float = DEADLINE) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stripe_through(services: Services, url: str) -> None:
    """Project 'acme' pays with test-mode Stripe credentials pointing at `url`."""
    with services.db.transaction() as tx:
        set_credentials(
            tx,
            get_project_by_slug(tx, "acme"),
            Gateway.STRIPE,
            Environment.TEST,
            {"secret_key": STRIPE_KEY, "api_base": url},
            sealer=services.sealer(CREDENTIALS_PURPOSE),
            now=services.clock(),
        )


def queue_payment(redis_url: str, session_id: str) -> PaymentJob:
    """What the confirm webhook does: the card parked in call state, the job on the queue."""
    call_sid = "CA" + secrets.token_hex(16)
    calls = callstate_from_url(redis_url, TEST_SECRET_KEY)
    calls.put(call_sid, flow.CallState(step=flow.Step.PROCESSING, session_id=session_id, attempt=1))
    calls.put_card(call_sid, flow.KeyedCard(number=APPROVED, expiry=EXPIRY, security_code=CVV))
    job = PaymentJob(session_id, 1, call_sid)
    RQJobs(redis_url).submit(job)
    return job


def scan(leak_scan: LeakScan, request: pytest.FixtureRequest, log: Path) -> str:
    text = log.read_text()
    leak_scan.check("worker log", f"{request.node.nodeid}, {log.name}", text)
    return text


class AllAtOnce(HeldGateway):
    """Holds localstripe's answers until `expected` connections each have a request waiting.

    A worker that runs gateway calls one at a time never gets there: its first call waits for
    an answer that only comes once the others have been sent.
    """

    def __init__(self, target: tuple[str, int], expected: int) -> None:
        self.expected = expected
        self.senders: set[int] = set()
        self._seen = threading.Lock()
        super().__init__(target)

    def _pump(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        try:
            while data := source.recv(65536):
                if answers:
                    self.released.wait()
                else:
                    with self._seen:
                        self.senders.add(id(source))
                        if len(self.senders) >= self.expected:
                            self.released.set()
                sink.sendall(data)
        except OSError:
            pass


def test_one_worker_process_has_many_slow_gateway_calls_in_flight_at_once(
    services: Services,
    new_session: Callable[..., str],
    localstripe_url: str,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    leak_scan: LeakScan,
    request: pytest.FixtureRequest,
) -> None:
    address = urlsplit(localstripe_url)
    hop = AllAtOnce((address.hostname or "127.0.0.1", address.port or 80), SIDE_BY_SIDE)
    stripe_through(services, hop.url)
    # localstripe refuses descriptions on intents
    jobs = [queue_payment(redis_url, new_session(description=None)) for _ in range(SIDE_BY_SIDE)]

    log = tmp_path / "worker.log"
    started = time.monotonic()
    try:
        with running(start_worker(database_url, redis_url, log, "--burst")) as worker:
            together = hop.released.wait(DEADLINE)
            code = worker.wait(timeout=DEADLINE)
    finally:
        hop.close()
    elapsed = time.monotonic() - started
    text = scan(leak_scan, request, log)

    assert together, f"only {len(hop.senders)} of {SIDE_BY_SIDE} calls at the gateway at once"
    assert code == 0, text
    statuses = [session_status(services, job.session_id) for job in jobs]
    assert statuses == ["payment-success"] * SIDE_BY_SIDE, text
    print(f"{SIDE_BY_SIDE} held payments, one worker process: {elapsed:.1f} s from start to exit")


class HangingReceiver:
    """A merchant endpoint that accepts every connection and never answers."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/hooks"
        self.accepted = 0
        self.open = 0
        self.most_open = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self.open += 1
                self.most_open = max(self.most_open, self.open)
            threading.Thread(target=self._hold, args=(client,), daemon=True).start()

    def _hold(self, client: socket.socket) -> None:
        with client:
            try:
                while client.recv(
                    65536
                ):  # read the request, answer nothing, until the sender quits
                    pass
            except OSError:
                pass
        with self._lock:
            self.open -= 1


def queue_webhooks(services: Services, redis_url: str, session_id: str, count: int) -> None:
    """`count` events for the merchant, each a delivery job on the worker's queue."""
    now = services.clock()
    ids = [f"evt_{uuid.uuid4().hex}" for _ in range(count)]
    with services.db.transaction() as tx:
        project = get_project_by_slug(tx, "acme")
        for event_id in ids:
            body = f'{{"event_id":"{event_id}","session_id":"{session_id}","status":"cancelled"}}'
            tx.add(
                WebhookEvent(
                    id=event_id,
                    project_id=project.id,
                    session_id=session_id,
                    type="cancelled",
                    payload=body,
                    created_at=now,
                    delivered=False,
                    attempts=0,
                    next_attempt_at=now,
                )
            )
    queue = RQJobs(redis_url)
    for event_id in ids:
        queue.deliver(event_id)


def test_a_phone_payment_completes_in_its_normal_time_while_hundreds_of_webhooks_hang(
    services: Services,
    merchant: dict[str, str],
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    leak_scan: LeakScan,
    request: pytest.FixtureRequest,
) -> None:
    receiver = HangingReceiver()
    set_project(services, "acme", webhook_url=receiver.url)
    # The web process with Redis: call state there, and it hands the payment to the queue.
    web = build_services(
        services.settings.model_copy(update={"redis_url": redis_url}),
        db=services.db,
        clock=services.clock,
    )
    client = app_for(web).test_client()
    created = client.post(
        "/v1/sessions", json=VOICE_SESSION, headers={"Authorization": merchant["test"]}
    ).get_json()
    queue_webhooks(services, redis_url, created["session_id"], QUEUED_WEBHOOKS)

    log = tmp_path / "worker.log"
    with running(start_worker(database_url, redis_url, log)) as worker:
        assert eventually(lambda: receiver.accepted > 0), "the worker never started sending"
        phone = Phone(
            flask_transport(client),
            auth_token=TEST_TWILIO_TOKEN,
            public_url=PUBLIC_URL,
            from_=VOICE_SESSION["caller"],
            to=created["sip_uri"],
            out=lambda _line: None,
        )  # real one-second pauses between hold polls, as Twilio plays them
        held_from = time.monotonic()
        result = phone.call(ScriptedKeypad([APPROVED + "#", EXPIRY, CVV, "1"]))
        call_seconds = time.monotonic() - held_from
        alive = worker.poll() is None
    receiver.close()
    text = scan(leak_scan, request, log)

    polls = sum(url.endswith("/twilio/result") for url, _ in phone.requests)
    assert "Your payment was approved." in result.heard, (result.heard, text)
    assert session_status(services, created["session_id"]) == "payment-success"
    assert polls <= 10, f"the caller held for {polls} polls"  # the hold limit is 40
    assert alive, text
    # The hanging receiver got a few sends at a time from this worker, never the whole queue.
    assert 0 < receiver.most_open <= ENDPOINT_LIMIT
    print(f"call with {QUEUED_WEBHOOKS} webhooks hanging: {call_seconds:.1f} s, {polls} polls")


def test_a_worker_running_a_payment_survives_redis_dropping_and_finishes_it(
    services: Services,
    new_session: Callable[..., str],
    localstripe_url: str,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    leak_scan: LeakScan,
    request: pytest.FixtureRequest,
) -> None:
    address = urlsplit(localstripe_url)
    gateway = HeldGateway((address.hostname or "127.0.0.1", address.port or 80))
    stripe_through(services, gateway.url)
    redis_address = urlsplit(redis_url)
    redis_hop = Outage((redis_address.hostname or "127.0.0.1", redis_address.port or 6379))
    redis_hop.up()
    through_hop = redis_address._replace(netloc=f"127.0.0.1:{redis_hop.port}").geturl()
    first = queue_payment(redis_url, new_session(description=None))

    log = tmp_path / "worker.log"
    try:
        with running(start_worker(database_url, through_hop, log)) as worker:
            assert gateway.called.wait(DEADLINE), log.read_text()  # the job is at the gateway
            redis_hop.down()
            gateway.released.set()
            # The gateway answered and the attempt is recorded; the job then needs Redis.
            assert eventually(lambda: "Redis unreachable" in log.read_text()), log.read_text()
            assert eventually(
                lambda: attempt_rows(services, first.session_id) == [(1, "succeeded")]
            )
            survived = worker.poll() is None
            redis_hop.up()
            second = queue_payment(redis_url, new_session(description=None))
            assert eventually(
                lambda: session_status(services, second.session_id) == "payment-success"
            ), log.read_text()
            still_running = worker.poll() is None
    finally:
        redis_hop.down()
        gateway.close()
    text = scan(leak_scan, request, log)

    assert survived and still_running, text
    assert session_status(services, first.session_id) == "payment-success", text
    assert worker.returncode == 0, text  # SIGTERM: a clean stop
