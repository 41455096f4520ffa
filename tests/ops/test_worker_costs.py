"""Issue 13 item 4: a worker's payment costs Redis nothing after it ran, its merchant webhook no
second trip through the queue, and an idle worker writes no log line per tick.

The worker runs in this process (`run_worker`) on the real RQ queues, with Redis call state; the
merchant endpoint is a real HTTP server.
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from pytest_httpserver import HTTPServer
from redis.connection import AbstractConnection
from rq import Queue
from sqlalchemy import event, select

from api import maintenance_tasks
from ivr.callstate import CARD_TTL
from ivr.charge import run_payment_job
from ivr.wiring import build_services
from payments.attempts import pay
from payments.jobs import PAYMENT_QUEUE, QUEUE_NAME, RQJobs, run_worker
from payments.services import PaymentJob, Services
from payments.store import WebhookEvent
from tests.ops.conftest import QueuedJobs
from tests.ops.test_exactly_once import session_status
from tests.ops.test_payment_lanes import DEADLINE, queue_payment
from tests.ops.test_webhook_jobs import _received
from tests.ops.test_webhooks import APPROVED

pytestmark = pytest.mark.redis

OUR_LOGGERS = ("paydial", "api", "ivr", "payments", "gateways")


@pytest.fixture
def worker_services(services: Services, redis_url: str, app: Flask) -> Services:
    """Wired as `paydial worker` is: Redis call state, the RQ queues, webhooks sent at commit
    (after the test's web app wired its own)."""
    return build_services(
        services.settings.model_copy(update={"redis_url": redis_url}),
        db=services.db,
        clock=services.clock,
    )


@pytest.fixture
def rq_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def rq_keys(client: redis.Redis) -> list[bytes]:
    """What RQ keeps of jobs: their hashes and results."""
    return sorted([*client.keys("rq:job:*"), *client.keys("rq:results:*")])


def test_a_payment_job_waits_no_longer_than_its_card_and_leaves_nothing_once_it_ran(
    worker_services: Services,
    redis_url: str,
    rq_redis: redis.Redis,
    new_session: Callable[..., str],
) -> None:
    session_id = new_session()
    queue_payment(redis_url, session_id)
    [job_key] = rq_keys(rq_redis)
    assert 0 < rq_redis.ttl(job_key) <= CARD_TTL  # with no worker, it goes when its card does

    run_worker(worker_services, {}, pay=run_payment_job, burst=True)

    assert session_status(worker_services, session_id) == "payment-success"
    assert rq_keys(rq_redis) == []


def test_each_job_is_queued_in_one_round_trip_to_redis(
    redis_url: str, rq_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = RQJobs(redis_url)
    jobs.submit(PaymentJob("first", 1, "CA-first"))  # its connection is open from here on
    sent: list[bytes] = []
    send = AbstractConnection.send_packed_command

    def counted(connection: AbstractConnection, command: Any, check_health: bool = True) -> None:
        sent.append(b"".join(command) if isinstance(command, list) else command)
        send(connection, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    jobs.submit(PaymentJob("second", 1, "CA-second"))
    jobs.deliver("evt_0123")
    jobs.operate(7)
    monkeypatch.undo()

    assert len(sent) == 3  # RQ on its own sends two pipelines per job
    assert all(b"MULTI" in trip and b"EXEC" in trip for trip in sent)
    payments, others = (
        Queue(PAYMENT_QUEUE, connection=rq_redis),
        Queue(QUEUE_NAME, connection=rq_redis),
    )
    assert payments.job_ids == ["pay-first-1", "pay-second-1"]
    assert [job.func_name.rsplit(".", 1)[-1] for job in others.jobs] == [
        "rq_deliver_webhook",
        "rq_operation",
    ]


def test_a_lane_reads_a_payment_job_from_its_data_field_alone(
    worker_services: Services,
    redis_url: str,
    rq_redis: redis.Redis,
    new_session: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session_id = new_session()
    queue_payment(redis_url, session_id)
    [job_key] = rq_keys(rq_redis)
    asked: list[tuple[str, ...]] = []
    execute = redis.Redis.execute_command

    def recorded(client: redis.Redis, *args: Any, **options: Any) -> Any:
        asked.append(tuple(str(arg) for arg in args[:3]))
        return execute(client, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", recorded)
    run_worker(worker_services, {}, pay=run_payment_job, burst=True)

    assert session_status(worker_services, session_id) == "payment-success"
    of_job = [command for command in asked if job_key.decode() in command]
    assert ("HGET", job_key.decode(), "data") in of_job
    assert [command[0] for command in of_job if command[0] != "HGET"] == ["DEL"]  # once it ran


def test_the_webhook_of_a_payment_a_worker_ran_goes_out_without_a_second_queued_job(
    worker_services: Services,
    redis_url: str,
    rq_redis: redis.Redis,
    hook_secret: str,
    receiver: HTTPServer,
    new_session: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver.expect_request("/hooks", method="POST").respond_with_data("ok")
    session_id = new_session()
    queue_payment(redis_url, session_id)
    enqueued: list[str] = []
    enqueue = Queue.enqueue

    def counted(queue: Queue, *args: Any, **kwargs: Any) -> Any:
        enqueued.append(queue.name)
        return enqueue(queue, *args, **kwargs)

    monkeypatch.setattr(Queue, "enqueue", counted)
    stop = threading.Event()
    worker = threading.Thread(
        target=run_worker,
        args=(worker_services, {}),
        kwargs={"pay": run_payment_job, "stop": stop},
    )
    worker.start()
    try:
        [sent] = _received(receiver, 1, timeout=DEADLINE)
    finally:
        stop.set()
        worker.join(DEADLINE)

    assert (sent["session_id"], sent["status"]) == (session_id, "payment-success")
    assert QUEUE_NAME not in enqueued  # handed to the webhook lane in this process
    assert rq_keys(rq_redis) == []


def test_an_idle_worker_says_nothing_at_info_while_its_sweeps_run(
    worker_services: Services,
    redis_url: str,
    rq_redis: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = maintenance_tasks()
    scheduler = RQJobs(redis_url)
    caplog.set_level(logging.INFO)
    for _ in range(2):  # two ticks of `paydial worker`'s scheduler, with nothing to do
        rq_redis.delete(*(f"{QUEUE_NAME}:sweep:{name}" for name in tasks))  # the interval passed
        assert scheduler.schedule(tasks, every=60) == list(tasks)
        run_worker(worker_services, tasks, pay=run_payment_job, burst=True)
        assert Queue(QUEUE_NAME, connection=rq_redis).count == 0  # every sweep ran

    ours = [
        record.getMessage()
        for record in caplog.records
        if record.name.split(".")[0] in OUR_LOGGERS and record.levelno >= logging.INFO
    ]
    assert ours == []


def test_the_worker_command_freezes_what_it_built_and_still_runs_its_jobs(
    cli_env: str,
    redis_url: str,
    rq_redis: redis.Redis,
    new_session: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`paydial worker --burst`, run in this process (its signal handlers put back after), on
    the real clock: the job it runs finds the test's session expired, and still ends."""
    from paydial.cli import main

    monkeypatch.setenv("REDIS_URL", redis_url)
    session_id = new_session()
    queue_payment(redis_url, session_id)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    frozen = gc.get_freeze_count()
    try:
        assert main(["worker", "--burst"]) == 0
        assert gc.get_freeze_count() > frozen
    finally:
        gc.unfreeze()
        for signum, handler in handlers.items():
            signal.signal(signum, handler)

    assert rq_keys(rq_redis) == []  # the payment job ran and left nothing


def selects_of_a_payment(services: Services, session_id: str) -> list[str]:
    """The SELECTs one approved payment runs, start to record."""
    selects: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("SELECT"):
            selects.append(statement)

    event.listen(services.db.engine, "before_cursor_execute", note)
    try:
        outcome = pay(services, session_id, APPROVED)
    finally:
        event.remove(services.db.engine, "before_cursor_execute", note)
    assert outcome.status == "payment-success"
    return selects


def test_a_payment_reads_its_attempts_once_to_start_and_once_to_record(
    services: Services, queued: QueuedJobs, new_session: Callable[..., str]
) -> None:
    """`_start` asks for "this attempt, or any unresolved one" in one read."""
    selects = selects_of_a_payment(services, new_session())

    assert len([s for s in selects if "\nFROM payment_attempts" in s]) == 2  # start, record


def test_a_payment_reads_the_session_with_its_project_and_the_failures_at_once(
    services: Services, queued: QueuedJobs, new_session: Callable[..., str]
) -> None:
    """Start and record each lock the session and read its project in one statement; the
    caller's and the card's failures are one read."""
    selects = selects_of_a_payment(services, new_session())

    assert [s for s in selects if "\nFROM projects" in s] == []  # the project never on its own
    assert len([s for s in selects if "JOIN projects" in s]) == 2  # start, record
    assert len([s for s in selects if "velocity_events" in s]) == 1


def test_the_webhook_body_of_a_status_change_lists_no_refunds_without_asking_for_them(
    services: Services, queued: QueuedJobs, hook_secret: str, new_session: Callable[..., str]
) -> None:
    """A session that was open has no refunds: its payment-success event is written without a
    read of money_operations, and its body still lists them (none)."""
    session_id = new_session()
    selects = selects_of_a_payment(services, session_id)

    assert [s for s in selects if "money_operations" in s] == []
    with services.db.transaction() as tx:
        body = tx.scalars(select(WebhookEvent.payload).where(WebhookEvent.session_id == session_id))
        [payload] = [json.loads(raw) for raw in body]
    assert (payload["status"], payload["refunds"], payload["amount_refunded"]) == (
        "payment-success",
        [],
        "0.00",
    )
