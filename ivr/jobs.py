"""Gateway calls off the Twilio request, so a slow gateway never becomes a Twilio timeout.

The confirm webhook calls `start_payment`: it claims `pay:<session>:<attempt>` once in call
state (a webhook Twilio delivers twice, or ten times at once, starts one job), parks the card
there for the job, and submits a `PaymentJob` carrying only the session id, the attempt number
and the CallSid. The job takes the card out of call state (atomically, so it exists once) and
runs `ivr.payments.pay`, whose attempt row is the second, durable guard. The result webhook
polls `attempt_result` while the caller holds.

The same runners send each merchant webhook right after the transaction that wrote it commits
(`ivr.delivery.deliver_now`), and with Redis the workers also take the periodic sweeps (expiry,
webhook retries, reconciliation) as queued jobs, each enqueued once per interval by whichever
worker gets there first.

Runners: an RQ queue when `REDIS_URL` is set (`paydial worker` runs it), else a thread pool
inside the web process (and `paydial serve` runs the sweeps in a thread).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select

from gateways.base import Card as GatewayCard
from ivr import flow
from ivr.binding import end_call
from ivr.callstate import CALL_TTL, CallStates, callstate_from_url
from ivr.delivery import deliver_now
from ivr.errors import Conflict
from ivr.payments import SUCCEEDED, pay, refuse
from ivr.services import Services
from ivr.sessions import UNRESOLVED_ATTEMPT_STATES
from ivr.store import PaymentAttempt
from ivr.sweeps import Task, run_once
from ivr.velocity import VelocityLimited

log = logging.getLogger(__name__)

QUEUE_NAME = "paydial"
CONFIRMATION_LENGTH = 8  # the caller hears the last characters of the transaction id


@dataclass(frozen=True)
class PaymentJob:
    """Everything a job may carry: no card data, which stays in call state."""

    session_id: str
    attempt: int
    call_sid: str


class JobRunner(Protocol):
    def submit(self, job: PaymentJob) -> None: ...

    def deliver(self, event_id: str) -> None: ...


class ThreadJobs:
    """The embedded default: a small pool in the web process."""

    def __init__(self, services: Services, *, max_workers: int = 4) -> None:
        self._services = services
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="paydial-pay")

    def submit(self, job: PaymentJob) -> None:
        self._pool.submit(run_payment_job, self._services, job)

    def deliver(self, event_id: str) -> None:
        self._pool.submit(self._deliver, event_id)

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
            rq_payment_job, job.session_id, job.attempt, job.call_sid,
            job_id=f"pay-{job.session_id}-{job.attempt}", result_ttl=600, failure_ttl=86400,
        )

    def deliver(self, event_id: str) -> None:
        self._queue.enqueue(rq_deliver_webhook, event_id, result_ttl=0, failure_ttl=86400)

    def schedule(self, names: Iterable[str], *, every: float) -> list[str]:
        """Enqueue each periodic task at most once per `every` seconds across all workers."""
        enqueued = []
        for name in names:
            if self._redis.set(f"{QUEUE_NAME}:sweep:{name}", b"1", nx=True, px=int(every * 1000)):
                self._queue.enqueue(rq_sweep, name, result_ttl=0, failure_ttl=86400)
                enqueued.append(name)
        return enqueued


def wire_calls(services: Services) -> None:
    """Give `services` call state and a job runner from its settings, unless it has them."""
    if services.callstates is None:
        if services.settings.secret_key is None:
            raise RuntimeError("PAYDIAL_SECRET_KEY is not set")
        services.callstates = callstate_from_url(
            services.settings.redis_url, services.settings.secret_key.get_secret_value()
        )
    if services.jobs is None:
        redis_url = services.settings.redis_url
        services.jobs = RQJobs(redis_url) if redis_url else ThreadJobs(services)
    services.db.on_outbox = lambda event_ids: _send_soon(services, event_ids)


def _send_soon(services: Services, event_ids: list[str]) -> None:
    """Hand just-committed webhook events to the runner; the sweep sends any that fail here."""
    if services.jobs is None:
        return
    try:
        for event_id in event_ids:
            services.jobs.deliver(event_id)
    except Exception as error:  # e.g. Redis unreachable: the committed event waits for the sweep
        log.warning("webhook events left for the sweep: %s", type(error).__name__)


def callstates_of(services: Services) -> CallStates:
    if services.callstates is None:
        raise RuntimeError("call state is not configured (ivr.jobs.wire_calls)")
    return services.callstates


def start_payment(services: Services, job: PaymentJob, card: flow.Card) -> bool:
    """Hand the card to a new job, once per (session, attempt); False when already started."""
    calls = callstates_of(services)
    # the claim outlives the call, so a late duplicate webhook still finds it
    if not calls.claim(f"pay:{job.session_id}:{job.attempt}", CALL_TTL):
        return False
    calls.put_card(job.call_sid, card)
    if services.jobs is None:
        raise RuntimeError("no job runner configured (ivr.jobs.wire_calls)")
    services.jobs.submit(job)
    return True


def run_payment_job(services: Services, job: PaymentJob) -> None:
    """Take the card out of call state, run the attempt, and close the session if the call ended."""
    calls = callstates_of(services)
    card = calls.take_card(job.call_sid)
    if card is None:  # the call ended or the flow failed first: the card is already gone
        log.info("payment job for session %s attempt %s found no card", job.session_id, job.attempt)
        return
    gateway_card = GatewayCard(
        number=card.number, exp_month=card.exp_month, exp_year=card.exp_year,
        cvc=card.security_code,
    )
    try:
        pay(
            services, job.session_id, gateway_card,
            postal_code=card.postal_code or None, attempt=job.attempt,
        )
    except VelocityLimited as error:  # stopped before the gateway: the caller hears why
        refuse(services, job.session_id, job.attempt, gateway_card, error.message)
    except Conflict as error:
        log.info("payment job for session %s not run: %s", job.session_id, error)
    except Exception as error:
        log.error("payment job for session %s failed: %s", job.session_id, type(error).__name__)
    if calls.get(job.call_sid) is None:  # the caller hung up while the gateway worked
        with services.db.transaction() as tx:
            end_call(tx, job.call_sid, now=services.clock())


def attempt_result(services: Services, session_id: str, number: int) -> flow.PaymentResult | None:
    """The gateway's answer for one attempt as the flow hears it; None while it is still running."""
    with services.db.transaction() as tx:
        attempt = tx.scalar(
            select(PaymentAttempt).where(
                PaymentAttempt.session_id == session_id, PaymentAttempt.number == number
            )
        )
        if attempt is None or attempt.state in UNRESOLVED_ATTEMPT_STATES:
            return None  # running, or awaiting reconciliation: the caller keeps holding
        if attempt.state == SUCCEEDED:
            transaction = str((attempt.processor or {}).get("transaction_id") or "")
            confirmation = transaction[-CONFIRMATION_LENGTH:]
            return flow.PaymentResult(approved=True, confirmation=confirmation)
        return flow.PaymentResult(approved=False, decline_code=attempt.error_code or "")


# --- RQ ----------------------------------------------------------------------------------------

_worker: tuple[Services, Mapping[str, Task]] | None = None


def _worker_context() -> tuple[Services, Mapping[str, Task]]:
    if _worker is None:
        raise RuntimeError("RQ jobs run only inside run_worker")
    return _worker


def rq_payment_job(session_id: str, attempt: int, call_sid: str) -> None:
    """The RQ entry point for a gateway call; runs in a `paydial worker` process."""
    services, _ = _worker_context()
    run_payment_job(services, PaymentJob(session_id, attempt, call_sid))


def rq_deliver_webhook(event_id: str) -> None:
    services, _ = _worker_context()
    deliver_now(services, event_id)


def rq_sweep(name: str) -> None:
    services, tasks = _worker_context()
    run_once(services, {name: tasks[name]})


def run_worker(services: Services, tasks: Mapping[str, Task], *, burst: bool = False) -> None:
    """Work the queue with `services` (no fork per job: connections stay in-process)."""
    global _worker
    from redis import Redis
    from rq import Queue, SimpleWorker

    if not services.settings.redis_url:
        raise RuntimeError("paydial worker needs REDIS_URL")
    wire_calls(services)
    _worker = (services, tasks)
    connection = Redis.from_url(services.settings.redis_url)
    worker = SimpleWorker([Queue(QUEUE_NAME, connection=connection)], connection=connection)
    worker.work(burst=burst, with_scheduler=False)
