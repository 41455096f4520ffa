"""Periodic work: expire sessions, send due webhooks, reconcile payments, forget old records.

Every task is safe to run in several processes at once (rows are claimed with SKIP LOCKED). With
Redis they run as queued jobs on the `paydial worker` processes; the embedded `paydial serve`
runs them in a background thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from payments import delivery, reconcile, refunds, reversals, velocity
from payments.services import C, Services
from payments.sessions import expire_due

log = logging.getLogger(__name__)

Task = Callable[[Services[C]], int]  # a channel's own tasks may need its call state (C)


def _expire(services: Services) -> int:
    with services.db.transaction() as tx:
        return expire_due(tx, services.clock())


CORE_TASKS: Mapping[str, Task] = {
    "expire_sessions": _expire,
    "deliver_webhooks": delivery.deliver_due,
    "reconcile_payments": reconcile.reconcile_due,
    "reverse_late_payments": reversals.reverse_due,
    "reconcile_operations": refunds.reconcile_operations,
    "purge_velocity": velocity.purge_expired,
}


def run_once(services: Services[C], tasks: Mapping[str, Task[C]]) -> dict[str, int]:
    """Run each task once; one task failing (say, the database is down) never stops the others."""
    done: dict[str, int] = {}
    for name, task in tasks.items():
        try:
            done[name] = task(services)
        except Exception as error:
            log.error("sweep %s failed: %s", name, type(error).__name__, exc_info=error)
    return done


class Sweeper:
    """Calls `tick` every `interval` seconds in a daemon thread until stopped.

    `paydial serve` ticks with `run_once` (the work itself); a `paydial worker` ticks by
    enqueueing the tasks for the workers (`payments.jobs.RQJobs.schedule`).
    """

    def __init__(self, tick: Callable[[], object], *, interval: float) -> None:
        self._tick = tick
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="paydial-sweeps", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception as error:  # e.g. Redis unreachable while scheduling: try next tick
                log.error("sweep tick failed: %s", type(error).__name__)
            self._stop.wait(self._interval)
