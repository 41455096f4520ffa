"""Work off the web request: gateway calls (payments; refunds, captures and voids), merchant
webhooks at commit, and the periodic sweeps.

The runners know nothing of the phone call: the wiring root hands them the payment task
(`ivr.charge.run_payment_job`), a `PaymentTask` that takes the card from wherever its channel
parked it. Each merchant webhook is sent right after the transaction that wrote it commits
(`payments.delivery.deliver_now`), and with Redis the workers also take the periodic sweeps
(expiry, webhook retries, reconciliation) as queued jobs, each enqueued once per interval by
whichever worker gets there first.

Runners: an RQ queue when `REDIS_URL` is set (`paydial worker` runs it), else a thread pool
inside the web process (and `paydial serve` runs the sweeps in a thread).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from payments.delivery import deliver_now
from payments.refunds import run_operation
from payments.services import PaymentJob, Services
from payments.sweeps import Task, run_once

log = logging.getLogger(__name__)

QUEUE_NAME = "paydial"


PaymentTask = Callable[[Services, PaymentJob], None]


class ThreadJobs:
    """The embedded default: a small pool in the web process."""

    def __init__(self, services: Services, pay: PaymentTask, *, max_workers: int = 4) -> None:
        self._services = services
        self._pay = pay
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="paydial-pay")

    def submit(self, job: PaymentJob) -> None:
        self._pool.submit(self._pay, self._services, job)

    def deliver(self, event_id: str) -> None:
        self._pool.submit(self._deliver, event_id)

    def operate(self, operation_id: int) -> None:
        self._pool.submit(run_operation, self._services, operation_id)

    def _deliver(self, event_id: str) -> None:
        try:
            deliver_now(self._services, event_id)
        except Exception as error:  # the event stays due: the sweep sends it
            log.error("webhook %s not sent at commit: %s", event_id, type(error).__name__)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


class RQJobs:
    """Redis-backed: any `paydial worker` process picks the job up."""

    def __init__(self, redis_url: str) -> None:
        from redis import Redis
        from rq import Queue

        # Enqueueing happens inside web requests: a hung Redis must fail fast, not hold them.
        self._redis = Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2)
        self._queue = Queue(QUEUE_NAME, connection=self._redis)

    def submit(self, job: PaymentJob) -> None:
        self._queue.enqueue(
            rq_payment_job,
            job.session_id,
            job.attempt,
            job.call_sid,
            job_id=f"pay-{job.session_id}-{job.attempt}",
            result_ttl=600,
            failure_ttl=86400,
        )

    def deliver(self, event_id: str) -> None:
        self._queue.enqueue(rq_deliver_webhook, event_id, result_ttl=0, failure_ttl=86400)

    def operate(self, operation_id: int) -> None:
        self._queue.enqueue(
            rq_operation, operation_id, job_id=f"op-{operation_id}", failure_ttl=86400
        )

    def schedule(self, names: Iterable[str], *, every: float) -> list[str]:
        """Enqueue each periodic task at most once per `every` seconds across all workers."""
        enqueued = []
        for name in names:
            if self._redis.set(f"{QUEUE_NAME}:sweep:{name}", b"1", nx=True, px=int(every * 1000)):
                self._queue.enqueue(rq_sweep, name, result_ttl=0, failure_ttl=86400)
                enqueued.append(name)
        return enqueued


# --- RQ ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerContext:
    services: Services
    tasks: Mapping[str, Task]
    pay: PaymentTask


_worker: WorkerContext | None = None


def _worker_context() -> WorkerContext:
    if _worker is None:
        raise RuntimeError("RQ jobs run only inside run_worker")
    return _worker


def rq_payment_job(session_id: str, attempt: int, call_sid: str) -> None:
    """The RQ entry point for a gateway call; runs in a `paydial worker` process."""
    worker = _worker_context()
    worker.pay(worker.services, PaymentJob(session_id, attempt, call_sid))


def rq_deliver_webhook(event_id: str) -> None:
    deliver_now(_worker_context().services, event_id)


def rq_operation(operation_id: int) -> None:
    run_operation(_worker_context().services, operation_id)


def rq_sweep(name: str) -> None:
    worker = _worker_context()
    run_once(worker.services, {name: worker.tasks[name]})


def run_worker(
    services: Services, tasks: Mapping[str, Task], *, pay: PaymentTask, burst: bool = False
) -> None:
    """Work the queue with `services` (no fork per job: connections stay in-process)."""
    global _worker
    from redis import Redis
    from rq import Queue, SimpleWorker

    if not services.settings.redis_url:
        raise RuntimeError("paydial worker needs REDIS_URL")
    _worker = WorkerContext(services, tasks, pay)
    connection = Redis.from_url(services.settings.redis_url)
    worker = SimpleWorker([Queue(QUEUE_NAME, connection=connection)], connection=connection)
    worker.work(burst=burst, with_scheduler=False)
