"""The process's wired-together dependencies, for use cases that need more than a transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

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


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Services:
    settings: Settings
    db: Database
    clock: Callable[[], datetime] = utc_now
    # The phone call's transient state and gateway job runner; ivr.charge.wire_calls fills them.
    callstates: CallStateSlot | None = None
    jobs: JobRunner | None = None
    secrets: Secrets = field(init=False)
    # The widget's decline-rate breaker: in Redis when configured, shared by every process.
    breaker: Breaker = field(init=False)

    def __post_init__(self) -> None:
        self.secrets = self.settings.secrets()
        self.breaker = Breaker.from_settings(self.settings)

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        return cls(settings=settings, db=Database(settings.database_url))

    def sealer(self, purpose: str) -> Sealer:
        """A sealer keyed by PAYDIAL_SECRET_KEY for one purpose (credentials, call state, ...)."""
        return Sealer(self.secrets.secret_key, purpose)
