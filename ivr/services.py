"""The process's wired-together dependencies, for use cases that need more than a transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ivr.crypto import Sealer
from ivr.store import Database
from paydial.settings import Settings

if TYPE_CHECKING:
    from ivr.callstate import CallStates
    from ivr.jobs import JobRunner


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Services:
    settings: Settings
    db: Database
    clock: Callable[[], datetime] = utc_now
    # The phone call's transient state and gateway job runner; ivr.jobs.wire_calls fills them.
    callstates: CallStates | None = None
    jobs: JobRunner | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        return cls(settings=settings, db=Database(settings.database_url))

    def sealer(self, purpose: str) -> Sealer:
        """A sealer keyed by PAYDIAL_SECRET_KEY for one purpose (credentials, call state, ...)."""
        if self.settings.secret_key is None:
            raise RuntimeError("PAYDIAL_SECRET_KEY is not set")
        return Sealer(self.settings.secret_key.get_secret_value(), purpose)
