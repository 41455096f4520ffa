"""Rate limits per API key per endpoint (Flask-Limiter), shared through Redis when configured.

With `REDIS_URL` every web process (gunicorn worker, machine) counts in one place, so a key gets
the same answer and the same `Retry-After` wherever its request lands. Without Redis the counts
live in the process, which is right for the one-process embedded setup. Requests without a
bearer key (health, Twilio, the widget frame) are not counted here.

A Redis outage neither takes the API down nor lifts the limits: each process notices the first
failed count, goes on counting in its own memory (a key may then get one budget per process) and
logs one warning. Meanwhile a request now and then pings Redis, 1, 2, 4 ... 32 seconds apart and
then from 1 again; once Redis answers, the process counts there again (the memory counts are not
copied over). The 1-second socket timeouts bound what that first count and each ping cost the one
request making them when Redis hangs; the other requests of an outage do not touch Redis.
"""

from __future__ import annotations

from flask import Flask
from flask_limiter import Limiter

from api.auth import bearer_token
from api.extension import EXTENSION
from payments.accounts import hash_key
from payments.services import Services

LIMITER_EXTENSION = "paydial_limiter"


def _key() -> str:
    """A digest of the presented key, so limits need no database look-up and store no secret."""
    return "key:" + hash_key(bearer_token() or "")


def init_app(app: Flask) -> Limiter:
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
        headers_enabled=True,
        # The same limits in memory while Redis is unreachable (see above).
        in_memory_fallback_enabled=True,
        key_prefix="paydial-limits",
    )
    app.extensions[LIMITER_EXTENSION] = limiter
    return limiter
