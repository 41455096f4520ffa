"""Rate limits per API key per endpoint, counted by `limits`, shared through Redis when configured.

With `REDIS_URL` every web process (gunicorn worker, machine) counts in one place, so a key gets
the same answer and the same `Retry-After` wherever its request lands. Without Redis the counts
live in the process, which is right for the one-process embedded setup. Requests without a
bearer key (health, Twilio, the widget frame, the dashboard) are not counted by those, and
blueprints no limit applies to (`init_app(unlimited=...)`: Twilio's webhooks, signed by Twilio
rather than keyed by a merchant) are not looked at. An agent platform that calls with the
project's integration token instead of a key (Retell's `?token=`, Vapi's `X-Vapi-Secret`) is
counted the same way, under the token's mode, once its view has found the token good
(`count_integration_request`).

The widget's charge endpoint has no key and no caller, so card testing through it is counted by
client address and by project instead (`guard_widget_charges`): every charge per address; only
declines (402) per address; only charges that reached the gateway (200 or 402) per project. The
project's decline-rate breaker, which pauses its widget charges and tells the merchant, is
`payments.breaker`. The frame shows the 429's message and fires `onFailure`.

A Redis outage neither takes the API down nor lifts the limits: each process notices the first
failed count, goes on counting in its own memory (a key may then get one budget per process) and
logs one warning. Meanwhile a request now and then pings Redis, 1, 2, 4 ... 32 seconds apart and
then from 1 again; once Redis answers, the process counts there again (the memory counts are not
copied over). The 1-second socket timeouts bound what that first count and each ping cost the one
request making them when Redis hangs; the other requests of an outage do not touch Redis.

This was Flask-Limiter until it was measured: working out which of its limits apply cost every
keyed request more than the Redis count itself, an eighth of a session create's instructions
(README, "Benchmarks"). What is left is the counting, which is `limits`, the library under it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from flask import Blueprint, Flask, Response, current_app, g, request
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import FixedWindowRateLimiter
from werkzeug.exceptions import TooManyRequests

from api.auth import bearer_token
from api.extension import EXTENSION, current_services
from payments.accounts import hash_key
from payments.model import Environment
from payments.services import Services
from payments.sessions import project_of_session

log = logging.getLogger(__name__)
T = TypeVar("T")

LIMITS_EXTENSION = "paydial_limits"
KEY_PREFIX = "paydial-limits"
WIDGET_CHARGE_ENDPOINT = "widget.charge"
TOO_MANY_FROM_HERE = "Too many payment attempts from this network. Please try again later."
TOO_MANY_DECLINES = "Too many declined payments from this network. Please try again later."
PROJECT_BUSY = "This merchant is taking too many card payments right now. Please try again later."
# While Redis is down it is pinged 2**n seconds after the last ping, n = 0 .. MAX_PING_EXPONENT.
MAX_PING_EXPONENT = 5
_PENDING = "paydial_limits_pending"  # g key: counts a widget charge owes once its answer is known


class Counts:
    """Fixed-window counts: in Redis when `redis_url` is set, in this process's memory while
    Redis does not answer (see the module docstring). `clock` is monotonic seconds."""

    def __init__(
        self, redis_url: str | None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._memory = FixedWindowRateLimiter(MemoryStorage())
        self._shared: FixedWindowRateLimiter | None = None
        self._storage: RedisStorage | None = None
        if redis_url:
            self._storage = RedisStorage(
                redis_url, wrap_exceptions=True, socket_connect_timeout=1, socket_timeout=1
            )
            self._shared = FixedWindowRateLimiter(self._storage)
        self._clock = clock
        self._down = False
        self._pinged_at = 0.0
        self._pings = 0

    def hit(self, item: RateLimitItem, *identifiers: str) -> bool:
        """Count one; False when the window was already full."""
        return self._run(lambda counter: counter.hit(item, KEY_PREFIX, *identifiers))

    def test(self, item: RateLimitItem, *identifiers: str) -> bool:
        """Whether one more would fit, counting nothing."""
        return self._run(lambda counter: counter.test(item, KEY_PREFIX, *identifiers))

    def seconds_to_reset(self, item: RateLimitItem, *identifiers: str) -> int:
        """When a full window resets; the whole window when the storage cannot say."""
        try:
            stats = self._counter().get_window_stats(item, KEY_PREFIX, *identifiers)
        except StorageError:
            return item.get_expiry()
        return max(1, int(stats.reset_time - time.time()))

    def close(self) -> None:
        """Close the Redis connections now rather than when the garbage collector finds them."""
        if self._storage is not None:
            self._storage.storage.close()

    def _counter(self) -> FixedWindowRateLimiter:
        if self._shared is None or (self._down and not self._answers_again()):
            return self._memory
        return self._shared

    def _run(self, count: Callable[[FixedWindowRateLimiter], T]) -> T:
        counter = self._counter()
        try:
            return count(counter)
        except StorageError as error:
            if counter is self._memory:
                raise
            log.warning(
                "rate limits counted in this process's memory: Redis did not answer (%s)",
                type(error.storage_error).__name__,
            )
            self._down, self._pinged_at, self._pings = True, self._clock(), 0
            return count(self._memory)

    def _answers_again(self) -> bool:
        """Ping Redis when the backoff allows; True once it answers."""
        if self._clock() - self._pinged_at <= 2**self._pings:
            return False
        self._pinged_at = self._clock()
        self._pings = (self._pings + 1) % (MAX_PING_EXPONENT + 1)
        assert self._storage is not None  # only a shared counter goes down
        if not self._storage.check():
            return False
        log.info("rate limits counted in Redis again")
        self._down = False
        return True


def _refuse(
    counts: Counts, item: RateLimitItem, identifiers: tuple[str, ...], message: str
) -> NoReturn:
    raise TooManyRequests(message, retry_after=counts.seconds_to_reset(item, *identifiers))


@dataclass(frozen=True)
class KeyBudgets:
    """Each mode's limits on a credential, per endpoint and method, and where they are counted."""

    counts: Counts
    live: list[RateLimitItem]
    test: list[RateLimitItem]

    def count(self, credential: str, environment: Environment) -> None:
        """One request made with `credential` (its budget named by its hash); a 429 once any of
        its mode's limits is full."""
        identifiers = ("key:" + hash_key(credential), f"{request.endpoint}:{request.method}")
        for item in self.live if environment is Environment.LIVE else self.test:
            if not self.counts.hit(item, *identifiers):
                _refuse(self.counts, item, identifiers, str(item))


def count_integration_request(token: str, environment: Environment) -> None:
    """Count a request an agent platform made with a good integration token of `environment`,
    as a keyed request is counted: the token has a budget of its own under its mode's limits."""
    budgets: KeyBudgets = current_app.extensions[LIMITS_EXTENSION]
    budgets.count(token, environment)


def _client_address() -> str:
    """The client's address: the peer's, or with PAYDIAL_TRUSTED_PROXIES what the proxies saw."""
    return "ip:" + (request.remote_addr or "unknown")


def _charged_project() -> str:
    """The project of the session in the path; '' when there is none."""
    services = current_services()
    with services.db.transaction() as tx:
        project = project_of_session(tx, (request.view_args or {}).get("session_id", ""))
        return f"project:{project.id}" if project else ""


def _declined(response: Response) -> bool:
    return response.status_code == 402


def _reached_gateway(response: Response) -> bool:
    return response.status_code in (200, 402)


@dataclass(frozen=True)
class _Guard:
    """One widget charge limit: counted on every charge, or only on answers `counts_when` says."""

    item: RateLimitItem
    message: str
    counts_when: Callable[[Response], bool] | None = None


def _guards(
    notation: str, message: str, counts_when: Callable[[Response], bool] | None = None
) -> list[_Guard]:
    return [_Guard(item, message, counts_when) for item in parse_many(notation)]


def guard_widget_charges(app: Flask, counts: Counts) -> None:
    """The widget charge view, wrapped in its limits (see the module docstring)."""
    settings = app.extensions[EXTENSION].settings
    by_address = [
        *_guards(settings.widget_ip_charge_limit, TOO_MANY_FROM_HERE),
        *_guards(settings.widget_ip_decline_limit, TOO_MANY_DECLINES, _declined),
    ]
    by_project = _guards(settings.widget_project_charge_limit, PROJECT_BUSY, _reached_gateway)
    view: Callable[..., Any] = app.view_functions[WIDGET_CHARGE_ENDPOINT]

    def guarded(**kwargs: str) -> Any:
        address, project = _client_address(), _charged_project()
        checks = [(guard, address) for guard in by_address]
        if project:
            checks += [(guard, project) for guard in by_project]
        pending = []
        for guard, who in checks:
            identifiers = (who, WIDGET_CHARGE_ENDPOINT)
            if guard.counts_when is None:
                allowed = counts.hit(guard.item, *identifiers)
            else:
                allowed = counts.test(guard.item, *identifiers)
                pending.append((guard, identifiers))
            if not allowed:
                _refuse(counts, guard.item, identifiers, guard.message)
        g.setdefault(_PENDING, []).extend(pending)
        return view(**kwargs)

    app.view_functions[WIDGET_CHARGE_ENDPOINT] = guarded

    @app.after_request
    def _count_what_the_answer_owes(response: Response) -> Response:
        for guard, identifiers in g.pop(_PENDING, ()):
            if guard.counts_when is not None and guard.counts_when(response):
                counts.hit(guard.item, *identifiers)
        return response


def init_app(app: Flask, *, unlimited: Iterable[Blueprint] = ()) -> Counts:
    services: Services = app.extensions[EXTENSION]
    settings = services.settings
    counts = Counts(settings.redis_url)
    budgets = KeyBudgets(
        counts, parse_many(settings.rate_limit_live), parse_many(settings.rate_limit_test)
    )
    skipped = frozenset(blueprint.name for blueprint in unlimited)

    @app.before_request
    def _count_keyed_request() -> None:
        """One budget per key, endpoint and method; refused once any of the key's limits is full."""
        token = bearer_token()
        if token is None or request.endpoint is None or request.blueprint in skipped:
            return
        live = token.startswith("mvn_live_")
        budgets.count(token, Environment.LIVE if live else Environment.TEST)

    app.extensions[LIMITS_EXTENSION] = budgets
    guard_widget_charges(app, counts)
    return counts
