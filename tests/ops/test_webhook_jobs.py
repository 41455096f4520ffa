"""Background jobs: webhooks leave at commit, and with Redis the sweeps are queued RQ jobs."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from pytest_httpserver import HTTPServer
from rq import Queue
from sqlalchemy import event, select

from api import maintenance_tasks
from ivr.charge import run_payment_job
from payments.attempts import pay
from payments.delivery import deliver_due, deliver_now
from payments.jobs import QUEUE_NAME, RQJobs, ThreadJobs, run_worker
from payments.services import Services
from payments.store import WebhookDelivery, WebhookEvent
from tests.conftest import free_port, tuned
from tests.ops.conftest import VOICE_SESSION, QueuedJobs, app_for
from tests.ops.test_webhooks import APPROVED


def _received(receiver: HTTPServer, count: int, timeout: float = 60) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while len(receiver.log) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return [json.loads(request.get_data()) for request, _ in receiver.log]


def _deliveries(services: Services) -> list[tuple[str, int | None]]:
    with services.db.transaction() as tx:
        rows = tx.execute(select(WebhookDelivery.event_id, WebhookDelivery.status_code))
        return [(event_id, status) for event_id, status in rows]


@pytest.fixture
def threads(services: Services) -> Iterator[ThreadJobs]:
    """The embedded runner: a thread pool in the web process."""
    jobs = ThreadJobs(services, run_payment_job)
    yield jobs
    jobs.shutdown()


def test_an_event_is_sent_as_soon_as_its_status_change_commits(
    services: Services,
    threads: ThreadJobs,
    hook_secret: str,
    receiver: HTTPServer,
    merchant: dict[str, str],
) -> None:
    receiver.expect_request("/hooks", method="POST").respond_with_data("ok")
    services = tuned(services, runner=lambda _: threads)
    client = app_for(services).test_client()
    created = client.post(
        "/v1/sessions", json=VOICE_SESSION, headers={"Authorization": merchant["test"]}
    ).get_json()

    pay(services, created["session_id"], APPROVED)  # no sweep runs in this test

    [body] = _received(receiver, 1)
    assert (body["session_id"], body["status"]) == (created["session_id"], "payment-success")
    threads.shutdown()  # the send's own transaction has finished
    with services.db.transaction() as tx:
        event = tx.scalars(select(WebhookEvent)).one()
        assert event.delivered and event.attempts == 1
    assert deliver_due(services) == 0  # nothing left for the sweep


@pytest.mark.redis
def test_with_redis_the_event_is_a_queued_job_that_a_worker_sends(
    services: Services,
    redis_url: str,
    hook_secret: str,
    receiver: HTTPServer,
    merchant: dict[str, str],
) -> None:
    receiver.expect_request("/hooks", method="POST").respond_with_data("ok")
    services = tuned(services, redis_url=redis_url, runner=lambda _: RQJobs(redis_url))
    client = app_for(services).test_client()
    session_id = client.post(
        "/v1/sessions", json=VOICE_SESSION, headers={"Authorization": merchant["test"]}
    ).get_json()["session_id"]

    pay(services, session_id, APPROVED)

    with services.db.transaction() as tx:
        event_id = tx.scalars(select(WebhookEvent.id)).one()
    [job] = Queue(QUEUE_NAME, connection=redis.Redis.from_url(redis_url)).get_jobs()
    assert job.args == (event_id,) and job.kwargs == {}  # the id only: the body stays in the DB
    assert receiver.log == []
    run_worker(services, maintenance_tasks(), pay=run_payment_job, burst=True)
    assert [b["event_id"] for b in _received(receiver, 1)] == [event_id]
    assert _deliveries(services) == [(event_id, 200)]


@pytest.fixture
def paid_event(
    services: Services,
    queued: QueuedJobs,
    hook_secret: str,
    receiver: HTTPServer,
    new_session: Callable[..., str],
) -> str:
    """A payment's webhook event, committed and waiting to be sent; the receiver answers 200."""
    receiver.expect_request("/hooks", method="POST").respond_with_data("ok")
    pay(services, new_session(), APPROVED)
    [event_id] = queued.deliveries
    return event_id


def test_the_job_and_the_sweep_racing_for_one_event_send_it_once(
    services: Services, receiver: HTTPServer, paid_event: str
) -> None:
    event_id = paid_event
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(send: Callable[[], object]) -> None:
        start.wait()
        try:
            send()
        except Exception as error:  # SQLite answers a second writer "database is locked"
            errors.append(error)

    racers = [
        threading.Thread(target=run, args=(lambda: deliver_now(services, event_id),)),
        threading.Thread(target=run, args=(lambda: deliver_due(services),)),
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()

    assert len(_received(receiver, 1)) == 1
    time.sleep(0.2)  # a second send, were there one, would have arrived by now
    assert len(receiver.log) == 1
    assert _deliveries(services) == [(event_id, 200)]
    if services.db.engine.dialect.name == "postgresql":
        assert errors == []  # the loser finds the event leased: nothing to send, no error


def test_sending_an_event_just_committed_claims_and_reads_it_in_one_statement(
    services: Services, receiver: HTTPServer, paid_event: str
) -> None:
    event_id = paid_event
    statements: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.startswith("BEGIN"):  # SQLite's BEGIN IMMEDIATE (store._sqlite_begin)
            statements.append(" ".join(statement.split()[:2]))

    event.listen(services.db.engine, "before_cursor_execute", note)
    try:
        assert deliver_now(services, event_id)
        assert deliver_now(services, event_id) is False  # delivered: nothing to claim
    finally:
        event.remove(services.db.engine, "before_cursor_execute", note)

    # the lease returns the event; its project; then the attempt recorded; then the second,
    # refused claim
    assert statements == [
        "UPDATE webhook_events",
        "SELECT projects.id,",
        "SELECT webhook_events.id,",
        "INSERT INTO",
        "UPDATE webhook_events",
        "UPDATE webhook_events",
    ]
    assert _deliveries(services) == [(event_id, 200)]


def test_when_the_queue_is_unreachable_the_commit_stands_and_the_sweep_sends(
    services: Services,
    hook_secret: str,
    receiver: HTTPServer,
    new_session: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver.expect_request("/hooks", method="POST").respond_with_data("ok")
    session_id = new_session()
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    services = tuned(services, runner=lambda _: RQJobs(unreachable))

    with caplog.at_level(logging.WARNING, logger="payments.jobs"):
        assert pay(services, session_id, APPROVED).approved

    assert "webhook events left for the sweep: ConnectionError" in caplog.text
    assert receiver.log == []
    assert deliver_due(services) == 1
    assert [b["session_id"] for b in _received(receiver, 1)] == [session_id]


@pytest.mark.redis
def test_workers_take_the_sweeps_as_jobs_enqueued_once_per_interval(
    services: Services,
    redis_url: str,
    hook_secret: str,
    receiver: HTTPServer,
    new_session: Callable[..., str],
    opt_in: Callable[..., None],
) -> None:
    receiver.expect_request("/hooks", method="POST").respond_with_data("ok")
    opt_in("expired")
    session_id = new_session()
    web, worker = RQJobs(redis_url), RQJobs(redis_url)  # two processes' schedulers
    services = tuned(services, redis_url=redis_url, runner=lambda _: worker)
    services.clock.advance(hours=1)  # type: ignore[attr-defined]  # the session is now overdue
    tasks = maintenance_tasks()

    assert web.schedule(tasks, every=60) == list(tasks)
    assert worker.schedule(tasks, every=60) == []  # already queued for this interval
    queue = Queue(QUEUE_NAME, connection=redis.Redis.from_url(redis_url))
    assert sorted(job.args[0] for job in queue.get_jobs()) == sorted(tasks)

    run_worker(services, tasks, pay=run_payment_job, burst=True)

    assert queue.count == 0
    with services.db.transaction() as tx:
        assert tx.scalars(select(WebhookEvent.type)).all() == ["expired"]
    # The expiry's own event goes out through a worker too: the sweeps ran side by side, so the
    # deliver sweep may have looked before the expiry committed; the next interval's sends it.
    redis.Redis.from_url(redis_url).delete(f"{QUEUE_NAME}:sweep:deliver_webhooks")
    assert worker.schedule(["deliver_webhooks"], every=60) == ["deliver_webhooks"]
    run_worker(services, tasks, pay=run_payment_job, burst=True)
    assert [(b["session_id"], b["status"]) for b in _received(receiver, 1)] == [
        (session_id, "expired")
    ]
