"""The widget's decline-rate breaker: a project whose widget charges are mostly declined is being
card-tested, so its widget charges pause for a while and the merchant is told, once.

Every widget charge the gateway answered counts in a sliding window per project and mode (a
merchant testing declines in test mode never pauses live charges). Once the window holds at least
`PAYDIAL_WIDGET_BREAKER_MIN_ATTEMPTS` charges and more than `PAYDIAL_WIDGET_BREAKER_DECLINE_RATE`
of them were declined, the breaker trips: charges are refused (`ChargesPaused`) until the pause
has passed, the window starts empty again, and the process whose count tripped it writes one
`widget-charges-paused` webhook event and one warning. Gateway errors (unreachable, misconfigured)
are not the card tester's doing and do not count.

With `REDIS_URL` the window and the pause live in Redis, so every web process shares one breaker,
and a Lua script counts and trips atomically, so exactly one process trips each pause. Without
Redis, and while Redis is unreachable (retried every few seconds, one warning per outage), they
live in the process's memory, like the rate limiter's fallback. Time is `services.clock`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import redis
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from payments.errors import PaydialError
from payments.outbox import record_project_event
from payments.settings import Settings
from payments.store import Database, Project

log = logging.getLogger(__name__)

PAUSED_EVENT = "widget-charges-paused"
PAUSED_MESSAGE = (
    "Card payments to this merchant are paused for a while after many declined cards. "
    "Please try again later."
)
REDIS_RETRY_SECONDS = 5.0


class ChargesPaused(PaydialError):
    """The project's widget charges are paused by the breaker; nothing goes to the gateway."""

    code = "charges_paused"

    def __init__(self, resume_at: datetime, now: datetime) -> None:
        super().__init__(PAUSED_MESSAGE)
        self.resume_at = resume_at
        self.retry_after = max(1, int((resume_at - now).total_seconds() + 0.999))


@dataclass(frozen=True)
class Rule:
    """When the breaker trips and for how long (milliseconds, as the stores count)."""

    window_ms: int
    min_attempts: int
    decline_rate: float
    pause_ms: int

    def trips(self, attempts: int, declined: int) -> bool:
        return attempts >= self.min_attempts and declined > attempts * self.decline_rate


@dataclass(frozen=True)
class Trip:
    """The window that tripped the breaker, and when the pause ends (ms since the epoch)."""

    attempts: int
    declined: int
    resume_ms: int


class PausedWindow(BaseModel):
    minutes: int
    attempts: int
    declined: int


class PausedEvent(BaseModel):
    """The `widget-charges-paused` webhook body (after `event_id`)."""

    event: str = PAUSED_EVENT
    project: str
    environment: str
    paused_at: datetime
    resume_at: datetime
    window: PausedWindow


class BreakerState(Protocol):
    """Where windows and pauses live: Redis, or this process's memory."""

    def paused_until(self, key: str, now_ms: int) -> int | None: ...

    def count(self, key: str, *, declined: bool, now_ms: int, rule: Rule) -> Trip | None: ...


class MemoryBreakerState:
    """One process's windows and pauses (the embedded setup, and Redis's stand-in in an outage)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, deque[tuple[int, bool]]] = {}
        self._paused: dict[str, int] = {}

    def paused_until(self, key: str, now_ms: int) -> int | None:
        with self._lock:
            until = self._paused.get(key)
            return until if until is not None and until > now_ms else None

    def count(self, key: str, *, declined: bool, now_ms: int, rule: Rule) -> Trip | None:
        with self._lock:
            if self._paused.get(key, 0) > now_ms:
                return None  # a charge that started before the pause: not part of a new window
            window = self._windows.setdefault(key, deque())
            window.append((now_ms, declined))
            while window[0][0] <= now_ms - rule.window_ms:
                window.popleft()
            attempts, declines = len(window), sum(d for _, d in window)
            if not rule.trips(attempts, declines):
                return None
            del self._windows[key]
            self._paused[key] = now_ms + rule.pause_ms
            return Trip(attempts, declines, now_ms + rule.pause_ms)


# KEYS: attempts, declines (sorted sets scored by time), pause (resume time in ms).
# ARGV: now, member, declined (1/0), window, min attempts, decline rate, pause.
# https://redis.io/docs/latest/develop/interact/programmability/eval-intro/
COUNT_SCRIPT = """
local now = tonumber(ARGV[1])
if tonumber(redis.call('GET', KEYS[3]) or '0') > now then return {0} end
local window = tonumber(ARGV[4])
for i = 1, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
end
redis.call('ZADD', KEYS[1], now, ARGV[2])
if ARGV[3] == '1' then redis.call('ZADD', KEYS[2], now, ARGV[2]) end
local attempts = redis.call('ZCARD', KEYS[1])
local declined = redis.call('ZCARD', KEYS[2])
if attempts >= tonumber(ARGV[5]) and declined > attempts * tonumber(ARGV[6]) then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('SET', KEYS[3], now + tonumber(ARGV[7]), 'PX', ARGV[7])
  return {1, attempts, declined, now + tonumber(ARGV[7])}
end
for i = 1, 2 do redis.call('PEXPIRE', KEYS[i], window) end
return {0}
"""


class RedisBreakerState:
    """Windows and pauses shared by every process through Redis, with a memory fallback."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._count = client.register_script(COUNT_SCRIPT)
        self._memory = MemoryBreakerState()
        self._retry_at = 0.0  # time.monotonic() after which Redis is tried again
        self._down = False

    @staticmethod
    def _keys(key: str) -> list[str]:
        # One hash tag, so a cluster keeps a project's three keys on one node for the script.
        return [f"paydial-breaker:{{{key}}}:{part}" for part in ("attempts", "declines", "paused")]

    def _usable(self) -> bool:
        return time.monotonic() >= self._retry_at

    def _failed(self, error: redis.RedisError) -> None:
        if not self._down:
            log.warning(
                "Redis unreachable (%s): the widget breaker counts in this process meanwhile",
                type(error).__name__,
            )
        self._down = True
        self._retry_at = time.monotonic() + REDIS_RETRY_SECONDS

    def _answered(self) -> None:
        if self._down:
            log.warning("Redis reachable again: the widget breaker counts there again")
        self._down = False

    def paused_until(self, key: str, now_ms: int) -> int | None:
        if self._usable():
            try:
                raw = self._redis.get(self._keys(key)[2])
            except redis.RedisError as error:
                self._failed(error)
            else:
                self._answered()
                until = int(raw) if raw is not None else None
                return until if until is not None and until > now_ms else None
        return self._memory.paused_until(key, now_ms)

    def count(self, key: str, *, declined: bool, now_ms: int, rule: Rule) -> Trip | None:
        if self._usable():
            args: list[str | int] = [now_ms, uuid.uuid4().hex, int(declined), rule.window_ms]
            args += [rule.min_attempts, repr(rule.decline_rate), rule.pause_ms]
            try:
                answer = self._count(keys=self._keys(key), args=args)
            except redis.RedisError as error:
                self._failed(error)
            else:
                self._answered()
                return Trip(*answer[1:]) if answer[0] else None
        return self._memory.count(key, declined=declined, now_ms=now_ms, rule=rule)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _moment(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class Breaker:
    """The decline-rate breaker of every project's widget charges (see the module docstring)."""

    def __init__(self, state: BreakerState, rule: Rule) -> None:
        self.state = state
        self.rule = rule

    @classmethod
    def from_settings(cls, settings: Settings) -> Breaker:
        state: BreakerState = MemoryBreakerState()
        if settings.redis_url:
            client = redis.Redis.from_url(
                settings.redis_url, socket_connect_timeout=1, socket_timeout=1
            )
            state = RedisBreakerState(client)
        minute = 60_000
        rule = Rule(
            window_ms=settings.widget_breaker_window_minutes * minute,
            min_attempts=settings.widget_breaker_min_attempts,
            decline_rate=settings.widget_breaker_decline_rate,
            pause_ms=settings.widget_breaker_pause_minutes * minute,
        )
        return cls(state, rule)

    def paused_until(self, project_id: str, environment: str, now: datetime) -> datetime | None:
        """When the project's widget charges in this mode resume; None when they are not paused."""
        until = self.state.paused_until(f"{project_id}:{environment}", _ms(now))
        return None if until is None else _moment(until)

    def check(self, project_id: str, environment: str, now: datetime) -> None:
        """Raise ChargesPaused while the project's widget charges in this mode are paused."""
        resume_at = self.paused_until(project_id, environment, now)
        if resume_at is not None:
            raise ChargesPaused(resume_at, now)

    def count(
        self, db: Database, project_id: str, environment: str, *, declined: bool, now: datetime
    ) -> None:
        """Count one answered widget charge; on a trip, tell the merchant (webhook and log)."""
        trip = self.state.count(
            f"{project_id}:{environment}", declined=declined, now_ms=_ms(now), rule=self.rule
        )
        if trip is not None:
            self._announce(db, project_id, environment, trip, now)

    def _announce(
        self, db: Database, project_id: str, environment: str, trip: Trip, now: datetime
    ) -> None:
        resume_at = _moment(trip.resume_ms)
        slug = project_id
        try:
            with db.transaction() as tx:
                project = tx.get_one(Project, project_id)
                slug = project.slug
                body = PausedEvent(
                    project=slug,
                    environment=environment,
                    paused_at=now,
                    resume_at=resume_at,
                    window=PausedWindow(
                        minutes=self.rule.window_ms // 60_000,
                        attempts=trip.attempts,
                        declined=trip.declined,
                    ),
                )
                record_project_event(
                    tx, project, environment, PAUSED_EVENT, now, body.model_dump(mode="json")
                )
        except SQLAlchemyError as error:  # the charge itself is done: its answer must go out
            log.error(
                "could not record the %s event for project %s: %s",
                PAUSED_EVENT,
                slug,
                type(error).__name__,
            )
        log.warning(
            "widget charges paused for project %s (%s mode) until %s: %d of the last %d declined",
            slug,
            environment,
            resume_at.isoformat(),
            trip.declined,
            trip.attempts,
        )
