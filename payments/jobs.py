"""Work off the web request: gateway calls (payments; refunds, captures and voids), merchant
webhooks at commit, and the periodic sweeps.

The runners know nothing of the phone call: the wiring root hands them the payment task
(`ivr.charge.run_payment_job`), a `PaymentTask` that takes the card from wherever its channel
parked it. Each merchant webhook is sent right after the transaction that wrote it commits
(`payments.delivery.deliver_now`), and with Redis the workers also take the periodic sweeps
(expiry, webhook retries, reconciliation) as queued jobs, each enqueued once per interval by
whichever worker gets there first.

Runners: RQ queues when `REDIS_URL` is set (`paydial worker` serves them), else a thread pool
inside the web process (and `paydial serve` runs the sweeps in a thread).

Two queues, two lanes. Gateway calls go to `paydial-payments`; webhook sends and sweeps to
`paydial`. A worker process serves each queue with its own thread pool (`Lane`), so a merchant
receiver that hangs can hold at most the webhook lane's threads (and `payments.delivery` lets it
hold only a few of those), never a payment. The payment lane runs `PAYDIAL_WORKER_THREADS`
gateway calls at once: every gateway adapter is safe across threads and the SDKs spend a call
waiting on the network, so one process covers what used to take one process per call.

Why threads over RQ rather than another engine: measured on this 2-core machine, 8 queued
payments whose (simulated) gateway answers after 1 s, one worker process in burst mode, SQLite
and Redis: RQ's `SimpleWorker` took 9.3 s for all 8 (one at a time); this lane had all 8 paid
1.7 s after it started. With N calls finishing in about one gateway latency, another engine
(Dramatiq's threaded workers, Celery's pools; not measured) could not do better for a job that
spends its time waiting on the gateway, and would change the message format, retries and
acknowledgements that the exactly-once tests (tests/ops/test_exactly_once.py), the web processes
and every deployment's Redis rely on. tests/ops/test_payment_lanes.py proves the concurrency
with real processes: one worker has 8 Stripe calls in flight at once.

A lane takes one job at a time off its queue (RQ's own list and job hash, so `RQJobs` enqueues as
RQ always did), only while it has a free thread, and deletes the job once it ran: nothing of a
payment outlives its run in Redis, and a payment job no worker took expires with its card
(`PAYMENT_WAIT`). Inside a worker, the webhook a payment's result commits goes straight to a free
thread of the same process's webhook lane (`Lane.offer`), with no round trip through Redis; the
queue takes it only when no such thread is free. A slow merchant still holds only webhook threads.

A copy of a job this process is already running goes back to the queue for another worker (two
copies exist only when a job was re-queued as presumed dead; the atomic card take and the attempt
row make the second run harmless wherever it lands). When Redis drops, the lane waits with
backoff and carries on when it answers again; a running job retries its own Redis steps the same
way (`until_reachable`), so it finishes instead of dying.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from payments.delivery import deliver_now
from payments.refunds import run_operation
from payments.services import C, PaymentJob, Services
from payments.sweeps import Task, run_once

if TYPE_CHECKING:
    from redis import Redis
    from rq import Queue
    from rq.job import Job

log = logging.getLogger(__name__)

QUEUE_NAME = "paydial"  # webhook sends and sweeps
PAYMENT_QUEUE = "paydial-payments"  # gateway calls, served apart so nothing queues before them
JOB_THREADS = 16  # the webhook lane: sweeps plus a few sends per merchant endpoint
# The longest a payment job waits for a worker; its card waits no longer (ivr.callstate.CARD_TTL).
PAYMENT_WAIT = 600
BLOCK_SECONDS = 2  # a lane's longest wait on an empty queue before it looks at `stop` again
DUPLICATE_PAUSE = 0.2  # between passes over a copy of a running job, left for others
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 10.0

PaymentTask = Callable[[Services[C], PaymentJob], None]
T = TypeVar("T")


def until_reachable(step: Callable[[], T], *, give_up_after: float, what: str) -> T:
    """Run `step`, retrying with backoff while Redis is unreachable, for up to `give_up_after` s."""
    from redis.exceptions import ConnectionError, TimeoutError

    deadline = time.monotonic() + give_up_after
    delay = FIRST_BACKOFF
    while True:
        try:
            return step()
        except (ConnectionError, TimeoutError) as error:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s: Redis unreachable (%s), retrying", what, type(error).__name__)
            time.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)


class ThreadJobs(Generic[C]):
    """The embedded default: a small pool in the web process."""

    def __init__(self, services: Services[C], pay: PaymentTask[C], *, max_workers: int = 4) -> None:
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
        self._payments = Queue(PAYMENT_QUEUE, connection=self._redis)
        self._queue = Queue(QUEUE_NAME, connection=self._redis)

    def submit(self, job: PaymentJob) -> None:
        self._enqueue(
            self._payments,
            rq_payment_job,
            job.session_id,
            job.attempt,
            job.call_sid,
            job_id=f"pay-{job.session_id}-{job.attempt}",
            result_ttl=0,
            ttl=PAYMENT_WAIT,
        )

    def deliver(self, event_id: str) -> None:
        worker = _worker
        if worker is not None and worker.webhooks.offer(lambda: rq_deliver_webhook(event_id)):
            return  # a worker's own payment committed it: its webhook lane sends it now
        self._enqueue(self._queue, rq_deliver_webhook, event_id, result_ttl=0)

    def operate(self, operation_id: int) -> None:
        self._enqueue(
            self._queue, rq_operation, operation_id, job_id=f"op-{operation_id}", failure_ttl=86400
        )

    def _enqueue(self, queue: Queue, task: Callable[..., None], *args: Any, **options: Any) -> None:
        """One round trip: on its own, RQ's enqueue names the queue in one pipeline and writes the
        job and its place in the queue in a second; on ours, all of it goes in one MULTI/EXEC.
        https://python-rq.org/docs/ ("Enqueueing jobs": `pipeline`)"""
        with self._redis.pipeline() as pipe:
            queue.enqueue(task, *args, pipeline=pipe, **options)
            pipe.execute()

    def schedule(self, names: Iterable[str], *, every: float) -> list[str]:
        """Enqueue each periodic task at most once per `every` seconds across all workers."""
        enqueued = []
        for name in names:
            if self._redis.set(f"{QUEUE_NAME}:sweep:{name}", b"1", nx=True, px=int(every * 1000)):
                self._enqueue(self._queue, rq_sweep, name, result_ttl=0)
                enqueued.append(name)
        return enqueued


# --- the worker process -------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerContext(Generic[C]):
    services: Services[C]
    tasks: Mapping[str, Task[C]]
    pay: PaymentTask[C]
    webhooks: Lane


_worker: WorkerContext[Any] | None = None  # the channel's call state, whatever it is


def _worker_context() -> WorkerContext[Any]:
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


class Lane:
    """One RQ queue served by up to `threads` jobs at once in this process."""

    def __init__(self, name: str, redis: Redis, *, threads: int, quiet: bool = False) -> None:
        self.name = name
        # A lane whose jobs come every tick (the sweeps) says at DEBUG only that one started.
        self._started_level = logging.DEBUG if quiet else logging.INFO
        self._redis = redis
        self._key = f"rq:queue:{name}"
        self._threads = threads
        self._free = threading.Semaphore(threads)
        self._running: set[str] = set()
        self._changed = threading.Condition()
        self._pool: ThreadPoolExecutor | None = None  # while serving

    def serve(self, stop: threading.Event, *, burst: bool = False) -> None:
        """Run jobs until `stop` is set (or, in burst mode, until the queue stays empty)."""
        with ThreadPoolExecutor(self._threads, thread_name_prefix=self.name) as pool:
            with self._changed:
                self._pool = pool
            try:
                self._serve(pool, stop, burst=burst)
            finally:
                with self._changed:  # nothing is offered to a pool that is shutting down
                    self._pool = None

    def offer(self, work: Callable[[], object]) -> bool:
        """Run `work` on a free thread of this lane now, as if it came off the queue; False when
        the lane is not serving or every thread is busy (the caller enqueues it then)."""
        if not self._free.acquire(blocking=False):
            return False
        with self._changed:
            if self._pool is not None:
                self._pool.submit(self._run, work, "offered job")
                return True
        self._free.release()
        return False

    def _serve(self, pool: ThreadPoolExecutor, stop: threading.Event, *, burst: bool) -> None:
        while not stop.is_set():
            if not self._free.acquire(timeout=BLOCK_SECONDS):
                continue
            job = self._next(stop)
            if job is None:
                self._free.release()
                if burst:
                    break
            elif self._take(job):
                pool.submit(self._perform, job)
            else:  # this process runs that job now: the copy is for another worker
                self._redis.rpush(self._key, job.id)
                self._free.release()
                with self._changed:  # or for this one, once its run ends
                    self._changed.wait(timeout=DUPLICATE_PAUSE)

    def _next(self, stop: threading.Event) -> Job | None:
        """The next job, waiting out a Redis outage; None when the queue stayed empty."""
        from redis.exceptions import ConnectionError, TimeoutError
        from rq.utils import as_text

        delay = FIRST_BACKOFF
        while not stop.is_set():
            try:
                popped = self._redis.blpop([self._key], timeout=BLOCK_SECONDS)
                if popped is None:
                    return None
                job = self._job(as_text(popped[1]))
                if job is None:  # a copy of a job that already ran and was deleted
                    continue
                return job
            except (ConnectionError, TimeoutError) as error:
                if delay == FIRST_BACKOFF:
                    log.warning("%s: Redis unreachable (%s)", self.name, type(error).__name__)
                stop.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF)
        return None

    def _job(self, job_id: str) -> Job | None:
        """The job's function and arguments from its hash's `data` field, as `Job.restore` reads
        them; None when the hash is gone. `Job.fetch` would also parse the hash's every date, a
        tenth of the worker's CPU for a payment, for nothing a lane uses."""
        from rq.job import Job

        job = Job(job_id, connection=self._redis)
        raw = self._redis.hget(job.key, "data")
        if not isinstance(raw, bytes):
            return None
        try:
            job.data = zlib.decompress(raw)
        except zlib.error:  # stored uncompressed, which Job.restore accepts too
            job.data = raw
        return job

    def _take(self, job: Job) -> bool:
        with self._changed:
            if job.id in self._running:
                return False
            self._running.add(job.id)
            return True

    def _perform(self, job: Job) -> None:
        try:
            self._run(lambda: job.func(*job.args, **job.kwargs), f"job {job.id}")
        finally:
            try:
                until_reachable(lambda: self._redis.delete(job.key), give_up_after=60, what=job.id)
            except Exception as error:
                log.error("%s: job %s left in Redis: %s", self.name, job.id, type(error).__name__)
            with self._changed:
                self._running.discard(job.id)
                self._changed.notify_all()

    def _run(self, work: Callable[[], object], what: str) -> None:
        """Run one piece of work on this thread and give the thread back."""
        log.log(self._started_level, "%s: %s started", self.name, what)
        try:
            work()
        except Exception as error:  # the job's own records say what happened; the type is enough
            log.error("%s: %s failed: %s", self.name, what, type(error).__name__)
        finally:
            self._free.release()


def run_worker(
    services: Services[C],
    tasks: Mapping[str, Task[C]],
    *,
    pay: PaymentTask[C],
    burst: bool = False,
    stop: threading.Event | None = None,
) -> None:
    """Serve both queues with `services` until `stop` (burst: until both queues are empty)."""
    global _worker
    from redis import Redis

    if not services.settings.redis_url:
        raise RuntimeError("paydial worker needs REDIS_URL")
    stop = stop or threading.Event()
    # A blocking pop must outlast its own timeout; anything slower is a dead connection.
    connection = Redis.from_url(
        services.settings.redis_url, socket_connect_timeout=2, socket_timeout=BLOCK_SECONDS + 5
    )
    payments = Lane(PAYMENT_QUEUE, connection, threads=services.settings.worker_threads)
    other = Lane(QUEUE_NAME, connection, threads=JOB_THREADS, quiet=True)
    _worker = WorkerContext(services, tasks, pay, other)
    paying = threading.Thread(
        target=payments.serve, args=(stop,), kwargs={"burst": burst}, name="paydial-payments"
    )
    paying.start()
    try:
        other.serve(stop, burst=burst)
    except BaseException:
        stop.set()
        raise
    finally:
        paying.join()
    if burst:  # a payment that finished meanwhile may have queued its webhook: send that too
        other.serve(stop, burst=True)
