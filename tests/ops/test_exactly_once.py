"""Exactly one gateway charge per payment attempt, however many workers or threads race for it.

Two guards stand between a duplicated job and a second charge: the card waits in call state and
the job takes it atomically (`ivr.charge.run_payment_job`), and the attempt row is committed
before the gateway is called (`payments.attempts.pay`). The first test runs the whole thing with
real processes: one job enqueued twice on the real RQ queue, two `paydial worker --burst` processes
started together, Stripe's SDK talking to localstripe. The second races `pay` itself in two
threads (what the atomic take keeps from happening between workers): the loser hears Conflict on
SQLite, which locks no rows, as on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import stripe

from gateways.base import Card
from gateways.stripe import METADATA_KEY
from ivr import flow
from ivr.callstate import callstate_from_url
from payments.accounts import get_project_by_slug
from payments.attempts import PaymentOutcome, attempt_key, pay
from payments.credentials import CREDENTIALS_PURPOSE, set_credentials
from payments.errors import Conflict
from payments.jobs import RQJobs
from payments.model import Environment, Gateway
from payments.services import PaymentJob, Services
from payments.store import PaymentSession
from tests.conftest import (
    TEST_SECRET_KEY,
    Clock,
    attempt_rows,
    count_gateway_calls,
    process_env,
)
from tests.ivr.conftest import APPROVED, CVV, EXPIRY
from tests.leakscan import LeakScan

REPO = Path(__file__).resolve().parents[2]
CALL_SID = "CA" + "e1" * 16
STRIPE_KEY = "sk_test_paydial"
PICKUP_DEADLINE = 60.0  # seconds for both workers to start and take the job (a loaded machine)
GATEWAY_DELAY = 0.5  # seconds the in-process gateway takes to charge


@pytest.fixture
def clock() -> Clock:
    """Now: the workers read the real clock, and the session must not have expired for them."""
    return Clock(datetime.now(UTC))


class HeldGateway:
    """A TCP hop in front of localstripe that holds the gateway's answers until released.

    Requests pass at once, answers wait: a worker that has called the gateway stays inside that
    call (its attempt row pending, the card taken) until the test lets it out.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.called = threading.Event()
        self.released = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.released.set()
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        try:
            while data := source.recv(65536):
                if answers:
                    self.released.wait()
                else:
                    self.called.set()
                sink.sendall(data)
        except OSError:
            pass


@pytest.fixture
def held_gateway(localstripe_url: str) -> Iterator[HeldGateway]:
    address = urlsplit(localstripe_url)
    hop = HeldGateway((address.hostname or "127.0.0.1", address.port or 80))
    yield hop
    hop.close()


@pytest.fixture
def stripe_via_hop(services: Services, merchant: dict[str, str], held_gateway: HeldGateway) -> None:
    """Project 'acme' gets test-mode Stripe credentials pointing at localstripe, through the hop."""
    with services.db.transaction() as tx:
        set_credentials(
            tx,
            get_project_by_slug(tx, "acme"),
            Gateway.STRIPE,
            Environment.TEST,
            {"secret_key": STRIPE_KEY, "api_base": held_gateway.url},
            sealer=services.sealer(CREDENTIALS_PURPOSE),
            now=services.clock(),
        )


def start_worker(database_url: str, redis_url: str, log: Path) -> subprocess.Popen[bytes]:
    """The Procfile's `worker` process in burst mode, configured through environment variables."""
    env = process_env(  # the gateway timeout is longer than the test holds the answer
        database_url, redis_url, PAYDIAL_GATEWAY_TIMEOUT=str(PICKUP_DEADLINE * 2)
    )
    command = [str(Path(sys.executable).with_name("paydial")), "worker", "--burst"]
    with log.open("wb") as output:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)


def both_take_the_job(logs: list[Path], job_id: str, held: HeldGateway) -> bool:
    """Wait until the gateway has been called and every worker's log names the job."""
    deadline = time.monotonic() + PICKUP_DEADLINE
    while not (held.called.is_set() and all(job_id in log.read_text() for log in logs)):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stripe_charges(localstripe_url: str, session_id: str) -> list[dict[str, Any]]:
    """This session's charges at localstripe (shared by the whole run), with their intents."""
    client = stripe.StripeClient(STRIPE_KEY, base_addresses={"api": localstripe_url})
    prefix = attempt_key(session_id, 0)[:-1]
    intents = {
        intent["id"]: intent
        for intent in (i.to_dict() for i in everything(client.v1.payment_intents.list))
        if str(intent["metadata"].get(METADATA_KEY, "")).startswith(prefix)
    }
    charges = (c.to_dict() for c in everything(client.v1.charges.list))
    return [
        c | {"intent": intents[c["payment_intent"]]}
        for c in charges
        if c.get("payment_intent") in intents
    ]


def everything(list_page: Callable[..., Any]) -> Iterator[Any]:
    """Every object of a list endpoint, page after page."""
    return iter(list_page({"limit": 100}).auto_paging_iter())


def session_status(services: Services, session_id: str) -> str:
    with services.db.transaction() as tx:
        return tx.get_one(PaymentSession, session_id).status


@pytest.mark.redis
def test_one_job_enqueued_twice_and_two_workers_make_one_stripe_charge(
    stripe_via_hop: None,
    held_gateway: HeldGateway,
    localstripe_url: str,
    new_session: Callable[..., str],
    services: Services,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    leak_scan: LeakScan,
    request: pytest.FixtureRequest,
) -> None:
    session_id = new_session(description=None)  # localstripe refuses descriptions on intents
    calls = callstate_from_url(redis_url, TEST_SECRET_KEY)
    calls.put(CALL_SID, flow.CallState(step=flow.Step.PROCESSING, session_id=session_id, attempt=1))
    calls.put_card(CALL_SID, flow.KeyedCard(number=APPROVED, expiry=EXPIRY, security_code=CVV))
    job = PaymentJob(session_id, 1, CALL_SID)
    queue = RQJobs(redis_url)
    queue.submit(job)
    queue.submit(job)  # re-queued (its worker presumed dead), or enqueued by a second web process

    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    workers = [start_worker(database_url, redis_url, log) for log in logs]
    try:
        both_took_it = both_take_the_job(logs, f"pay-{session_id}-1", held_gateway)
        held_gateway.released.set()
        codes = [worker.wait(timeout=PICKUP_DEADLINE) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    texts = [log.read_text() for log in logs]
    for log, text in zip(logs, texts, strict=True):
        leak_scan.check("worker log", f"{request.node.nodeid}, {log.name}", text)

    assert codes == [0, 0], texts
    # Both workers held the job while the first one's gateway call was still unanswered.
    assert both_took_it, texts
    assert sum("found no card" in text for text in texts) == 1, texts
    charges = stripe_charges(localstripe_url, session_id)
    assert [(c["status"], c["intent"]["metadata"][METADATA_KEY]) for c in charges] == [
        ("succeeded", attempt_key(session_id, 1))
    ]
    assert attempt_rows(services, session_id) == [(1, "succeeded")]
    assert session_status(services, session_id) == "payment-success"


@pytest.fixture
def gateway_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every charge reaching the simulated gateway, which takes a while to answer."""
    return count_gateway_calls(monkeypatch, delay=GATEWAY_DELAY)


def test_two_threads_paying_one_attempt_make_one_gateway_call_and_the_loser_hears_conflict(
    new_session: Callable[..., str],
    services: Services,
    gateway_calls: list[str],
) -> None:
    session_id = new_session()
    card = Card(number=APPROVED, exp_month=12, exp_year=2030, cvc=CVV)  # EXPIRY, as keyed
    together = threading.Barrier(2)

    def attempt() -> PaymentOutcome | Exception:
        together.wait(timeout=60)
        try:
            return pay(services, session_id, card, attempt=1)
        except Exception as error:  # the loser's answer, whatever it is, is what this test checks
            return error

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: attempt(), range(2)))

    assert gateway_calls == [attempt_key(session_id, 1)]
    [won] = [a for a in answers if isinstance(a, PaymentOutcome)]
    [lost] = [a for a in answers if not isinstance(a, PaymentOutcome)]
    assert won.approved and won.transaction_id
    assert isinstance(lost, Conflict), repr(lost)
    assert str(lost) == "This payment attempt is already being processed"
    assert attempt_rows(services, session_id) == [(1, "succeeded")]
    assert session_status(services, session_id) == "payment-success"
