"""The process's wired-together dependencies, for use cases that need more than a transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import InitVar, dataclass, field
from datetime import UTC, datetime
from typing import Generic, Protocol

from typing_extensions import TypeVar

from payments.breaker import Breaker
from payments.crypto import Sealer
from payments.settings import Secrets, Settings
from payments.store import Database


@dataclass(frozen=True)
class PaymentJob:
    """Everything a payment job may carry: no card data, which its channel parks elsewhere."""

    session_id: str
    attempt: int
    call_sid: str


class JobRunner(Protocol):
    """The port work leaves the request through: a thread pool or an RQ queue (payments.jobs)."""

    def submit(self, job: PaymentJob) -> None: ...

    def deliver(self, event_id: str) -> None: ...

    def operate(self, operation_id: int) -> None:
        """Run a refund, capture or void (payments.refunds.run_operation)."""
        ...


class CallStateSlot(Protocol):
    """What the core knows of a channel's transient state: only that a call's can be wiped."""

    def delete(self, call_sid: str) -> None: ...


# The channel's call state as its own code knows it (ivr: `Services[CallStates]`); the core sees
# only a `CallStateSlot`. Covariant: a `Services[CallStates]` is a `Services` to the core.
C = TypeVar("C", bound=CallStateSlot, default=CallStateSlot, covariant=True)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Services(Generic[C]):
    """Built once per process by `ivr.wiring.build_services` (web, worker, serve and tests).

    `runner` makes the job runner from the finished Services: the thread pool runs its jobs
    with them.
    """

    settings: Settings
    db: Database
    callstates: C
    runner: InitVar[Callable[[Services[C]], JobRunner]]
    clock: Callable[[], datetime] = utc_now
    jobs: JobRunner = field(init=False)
    secrets: Secrets = field(init=False)
    # The widget's decline-rate breaker: in Redis when configured, shared by every process.
    breaker: Breaker = field(init=False)
    _sealers: dict[str, Sealer] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self, runner: Callable[[Services[C]], JobRunner]) -> None:
        self.secrets = self.settings.secrets()
        self.breaker = Breaker.from_settings(self.settings)
        self.jobs = runner(self)

    def sealer(self, purpose: str) -> Sealer:
        """A sealer keyed by PAYDIAL_SECRET_KEY for one purpose (credentials, call state, ...),
        its key derived once: a payment opens its gateway's credentials, a delivery signs."""
        sealer = self._sealers.get(purpose)
        if sealer is None:
            sealer = self._sealers[purpose] = Sealer(self.secrets.secret_key, purpose)
        return sealer
