"""The one builder of a process's Services: the web (`api.create_app`), `paydial worker`,
`paydial serve`, the other commands and the tests all get theirs here.

It knows both floors it joins: the call state and payment job of the phone call (ivr) and the
core's runners (payments.jobs). Call state and the job runner come from the settings (Redis when
`REDIS_URL` is set, else in-process) unless the caller brings its own; each webhook event a
transaction writes is handed to the runner as it commits, and each call whose session a
transaction ended is told so in call state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from redis.exceptions import RedisError

from ivr.callstate import CallServices, CallStates, callstate_from_url
from ivr.charge import run_payment_job
from payments.jobs import RQJobs, ThreadJobs
from payments.services import JobRunner, utc_now
from payments.settings import Settings
from payments.store import Database

log = logging.getLogger(__name__)

Runner = Callable[[CallServices], JobRunner]


def build_services(
    settings: Settings,
    *,
    db: Database | None = None,
    clock: Callable[[], datetime] = utc_now,
    callstates: CallStates | None = None,
    runner: Runner | None = None,
) -> CallServices:
    """Services from `settings`; `db`, `callstates` and `runner` replace the settings' own."""
    if callstates is None:
        callstates = callstate_from_url(
            settings.redis_url, settings.secrets().secret_key, waiters=settings.hold_waiters
        )
    services = CallServices(
        settings=settings,
        db=db or Database(settings.database_url, pool_size=settings.database_pool_size),
        callstates=callstates,
        runner=runner or default_runner(settings),
        clock=clock,
    )
    services.db.on_outbox = lambda event_ids: _send_soon(services, event_ids)
    services.db.on_session_ended = lambda call_sids: _tell_calls(services, call_sids)
    return services


def default_runner(settings: Settings) -> Runner:
    """RQ queues with Redis (a `paydial worker` runs the jobs), else a thread pool in-process."""
    redis_url = settings.redis_url
    if redis_url:
        return lambda _: RQJobs(redis_url)
    return lambda services: ThreadJobs(services, run_payment_job)


def _send_soon(services: CallServices, event_ids: list[str]) -> None:
    """Hand just-committed webhook events to the runner; the sweep sends any that fail here."""
    try:
        for event_id in event_ids:
            services.jobs.deliver(event_id)
    except Exception as error:  # e.g. Redis unreachable: the committed event waits for the sweep
        log.warning("webhook events left for the sweep: %s", type(error).__name__)


def _tell_calls(services: CallServices, call_sids: list[str]) -> None:
    """A committed transaction ended these calls' sessions: their next webhook reads it.

    With Redis unreachable the note is lost, but the call learns at a result poll that reads the
    session (once its payment job has answered, and the last of the hold), and no payment starts
    on a session that has ended.
    """
    try:
        for call_sid in call_sids:
            services.callstates.note_session_ended(call_sid)
    except RedisError as error:
        log.warning("calls not told their session ended: %s", type(error).__name__)
