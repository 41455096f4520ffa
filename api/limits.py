"""Rate limits per API key per endpoint (Flask-Limiter), shared through Redis when configured.

With `REDIS_URL` every web process (gunicorn worker, machine) counts in one place, so a key gets
the same answer and the same `Retry-After` wherever its request lands. Without Redis the counts
live in the process, which is right for the one-process embedded setup. Requests without a
bearer key (health, Twilio, the widget frame) are not counted by those. Blueprints no limit applies
to (`init_app(unlimited=...)`: Twilio's webhooks, signed by Twilio rather than keyed by a merchant)
are skipped before the limiter does any work: it would cost every webhook of every call its time.

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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from flask_limiter import Limiter, RequestLimit
from redis.exceptions import RedisError

from api.auth import bearer_token
from api.extension import EXTENSION, current_services
from payments.accounts import hash_key
from payments.services import Services
from payments.sessions import project_of_session

LIMITER_EXTENSION = "paydial_limiter"
WIDGET_CHARGE_ENDPOINT = "widget.charge"
TOO_MANY_FROM_HERE = "Too many payment attempts from this network. Please try again later."
TOO_MANY_DECLINES = "Too many declined payments from this network. Please try again later."
PROJECT_BUSY = "This merchant is taking too many card payments right now. Please try again later."


def _key() -> str:
    """A digest of the presented key, so limits need no database look-up and store no secret."""
    return "key:" + hash_key(bearer_token() or "")


def _client_address() -> str:
    """The client's address: the peer's, or with PAYDIAL_TRUSTED_PROXIES what the proxies saw."""
    return "ip:" + (request.remote_addr or "unknown")


def _charged_project() -> str:
    """The project of the session in the path, looked up once per request; '' when unknown."""
    if "widget_project" not in g:
        services = current_services()
        with services.db.transaction() as tx:
            project = project_of_session(tx, (request.view_args or {}).get("session_id", ""))
            g.widget_project = project.id if project else None
    return f"project:{g.widget_project}" if g.widget_project else ""


def _no_project() -> bool:
    return not _charged_project()


def _declined(response: Response) -> bool:
    return response.status_code == 402


def _reached_gateway(response: Response) -> bool:
    return response.status_code in (200, 402)


def _seconds_to_reset(limit: RequestLimit) -> int:
    """When a breached limit's window resets; its whole window when the storage cannot say."""
    try:
        return max(1, int(limit.reset_at - time.time()))
    except RedisError:
        return int(limit.limit.get_expiry())


def _skip_blueprints(app: Flask, limiter: Limiter, skipped: frozenset[str]) -> None:
    """Run the limiter's check only outside `skipped`. Its own request filter is asked only after
    it has worked out which limits and exemptions apply, so the hook itself is wrapped."""
    hooks = app.before_request_funcs[None]
    at = hooks.index(limiter._check_request_limit)
    check = hooks[at]

    def _check_request_limit() -> None:
        if request.blueprint not in skipped:
            check()

    hooks[at] = _check_request_limit


def guard_widget_charges(app: Flask, limiter: Limiter) -> None:
    """The widget charge view, wrapped in its limits (see the module docstring)."""
    services: Services = app.extensions[EXTENSION]
    limits = services.settings
    view: Callable[..., Any] = app.view_functions[WIDGET_CHARGE_ENDPOINT]
    for decorate in (
        limiter.limit(
            limits.widget_ip_charge_limit,
            key_func=_client_address,
            error_message=TOO_MANY_FROM_HERE,
        ),
        limiter.limit(
            limits.widget_ip_decline_limit,
            key_func=_client_address,
            deduct_when=_declined,
            error_message=TOO_MANY_DECLINES,
        ),
        limiter.limit(
            limits.widget_project_charge_limit,
            deduct_when=_reached_gateway,
            error_message=PROJECT_BUSY,
            key_func=_charged_project,
            exempt_when=_no_project,
        ),
    ):
        view = decorate(view)
    app.view_functions[WIDGET_CHARGE_ENDPOINT] = view


def init_app(app: Flask, *, unlimited: Iterable[Blueprint] = ()) -> Limiter:
    services: Services = app.extensions[EXTENSION]
    settings = services.settings

    def limit_for_key() -> str:
        live = (bearer_token() or "").startswith("mvn_live_")
        return settings.rate_limit_live if live else settings.rate_limit_test

    limiter = Limiter(
        _key,
        app=app,
        # Default limits count per route (and here per method): one key, one budget per endpoint.
        default_limits=[limit_for_key],
        default_limits_per_method=True,
        default_limits_exempt_when=lambda: bearer_token() is None,
        storage_uri=settings.redis_url or "memory://",
        storage_options={"socket_connect_timeout": 1, "socket_timeout": 1}
        if settings.redis_url
        else {},
        # Flask-Limiter's X-RateLimit-* headers would cost every keyed request two more Redis
        # round trips (its window's count and reset); only a refusal says when to come back.
        headers_enabled=False,
        # The same limits in memory while Redis is unreachable (see above).
        in_memory_fallback_enabled=True,
        key_prefix="paydial-limits",
    )

    @app.after_request
    def _retry_after_when_refused(response: Response) -> Response:
        refused = limiter.current_limit
        if response.status_code == 429 and refused is not None and refused.breached:
            response.headers.setdefault("Retry-After", str(_seconds_to_reset(refused)))
        return response

    _skip_blueprints(app, limiter, frozenset(blueprint.name for blueprint in unlimited))
    app.extensions[LIMITER_EXTENSION] = limiter
    guard_widget_charges(app, limiter)
    return limiter
