"""Settings from the environment (names as in PRODUCT.md "Running it")."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from limits import parse_many
from pydantic import AfterValidator, AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from payments.local import (
    DEFAULT_DATABASE_URL,
    DEFAULT_PHONE_NUMBER,
    DEFAULT_PUBLIC_URL,
    DEFAULT_SIP_DOMAIN,
    HOME_VARIABLE,
    SECRET_VARIABLES,
    MissingSecrets,
    ensure_local_secrets,
    local_secrets_path,
)


@dataclass(frozen=True)
class Secrets:
    """The secrets a running process has for certain: resolved once, never optional after."""

    secret_key: str = field(repr=False)
    twilio_auth_token: str = field(repr=False)


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


DATABASE_POOL_SIZE = 16  # connections per process: Settings.database_pool_size, Database


def _rate_limits(value: str) -> str:
    """Rate limits in `limits`' notation, e.g. "20/minute" or "100/minute;1000/hour"; a typo is a
    settings error at start-up, not a 500 on the first request it would apply to.
    https://limits.readthedocs.io/en/stable/quickstart.html#rate-limit-string-notation"""
    parse_many(value)
    return value


RateLimits = Annotated[str, AfterValidator(_rate_limits)]


class Settings(BaseSettings):
    """Everything configurable; the defaults are the embedded, single-process setup."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore")

    database_url: str = Field(DEFAULT_DATABASE_URL, validation_alias=_env("DATABASE_URL"))
    # Where the embedded setup keeps the secrets it generates; None: the per-user data directory.
    paydial_home: Path | None = Field(None, validation_alias=_env(HOME_VARIABLE))
    redis_url: str | None = Field(None, validation_alias=_env("REDIS_URL"))
    public_url: str = Field(DEFAULT_PUBLIC_URL, validation_alias=_env("PAYDIAL_PUBLIC_URL"))
    twilio_auth_token: SecretStr | None = Field(None, validation_alias=_env("TWILIO_AUTH_TOKEN"))
    secret_key: SecretStr | None = Field(None, validation_alias=_env("PAYDIAL_SECRET_KEY"))
    phone_number: str = Field(DEFAULT_PHONE_NUMBER, validation_alias=_env("PAYDIAL_PHONE_NUMBER"))
    sip_domain: str = Field(DEFAULT_SIP_DOMAIN, validation_alias=_env("PAYDIAL_SIP_DOMAIN"))
    session_ttl_minutes: int = Field(30, ge=1, validation_alias=_env("PAYDIAL_SESSION_TTL_MINUTES"))
    widget_ttl_minutes: int = Field(5, ge=1, validation_alias=_env("PAYDIAL_WIDGET_TTL_MINUTES"))
    gateway_timeout_seconds: float = Field(
        10.0, gt=0, validation_alias=_env("PAYDIAL_GATEWAY_TIMEOUT")
    )
    json_logs: bool = Field(False, validation_alias=_env("PAYDIAL_JSON_LOGS"))
    log_level: str = Field("INFO", validation_alias=_env("PAYDIAL_LOG_LEVEL"))
    webhook_timeout_seconds: float = Field(
        5.0, gt=0, validation_alias=_env("PAYDIAL_WEBHOOK_TIMEOUT")
    )
    # Sends in flight at once to one merchant endpoint, per worker process; the rest wait.
    webhook_concurrency: int = Field(4, ge=1, validation_alias=_env("PAYDIAL_WEBHOOK_CONCURRENCY"))
    # Gateway calls one `paydial worker` process runs at once (threads on the payment queue). The
    # threads wait on the gateway: 200 calls and a 2 s gateway (bench/calls.py, when it still ran
    # sync web workers) held p99 9.9 s at 32 and 6.1 s at 100, 8.5 and 10.5 charges/s.
    worker_threads: int = Field(100, ge=1, validation_alias=_env("PAYDIAL_WORKER_THREADS"))
    # A call's hold poll waits in its web thread, up to this long, for its payment's answer or
    # its session's end, so the caller hears either at once instead of after Twilio's next
    # one-second <Pause> (the poll that follows a wait asks for none). 0: no waiting; at most
    # 10, well inside the 15 s Twilio waits for a webhook's answer.
    hold_wait_seconds: float = Field(1.0, ge=0, le=10, validation_alias=_env("PAYDIAL_HOLD_WAIT"))
    # Hold polls of one web process that may wait at once (each holds a thread: keep it under
    # WEB_THREADS); the others pause as with no waiting.
    hold_waiters: int = Field(8, ge=0, validation_alias=_env("PAYDIAL_HOLD_WAITERS"))
    # PostgreSQL connections each process keeps open; a thread finding them all busy waits for
    # one (up to 30 s). No extra ones are opened for a burst: SQLAlchemy closes those again as
    # soon as they are returned, and 200 calls (bench/calls.py) opened 227 connections in 20 s
    # that way. The default fits a web process's 16 threads; 4 of those and a worker hold 80.
    database_pool_size: int = Field(
        DATABASE_POOL_SIZE, ge=1, validation_alias=_env("PAYDIAL_DB_POOL_SIZE")
    )
    # Per API key per endpoint.
    rate_limit_live: RateLimits = Field(
        "20/minute", validation_alias=_env("PAYDIAL_RATE_LIMIT_LIVE")
    )
    rate_limit_test: RateLimits = Field(
        "100/minute", validation_alias=_env("PAYDIAL_RATE_LIMIT_TEST")
    )
    # Failed payment attempts allowed per card and per caller within the window, across sessions.
    card_failure_limit: int = Field(5, ge=1, validation_alias=_env("PAYDIAL_CARD_FAILURE_LIMIT"))
    caller_failure_limit: int = Field(
        5, ge=1, validation_alias=_env("PAYDIAL_CALLER_FAILURE_LIMIT")
    )
    velocity_window_hours: int = Field(
        24, ge=1, validation_alias=_env("PAYDIAL_VELOCITY_WINDOW_HOURS")
    )
    # Card testing through the widget: charges and declines per client
    # address, and charges per project; the breaker below pauses a project's widget charges.
    # How many reverse proxies in front of the web process append to X-Forwarded-For (Heroku's
    # router, a load balancer): the client address the widget limits count is the one they saw.
    trusted_proxies: int = Field(0, ge=0, validation_alias=_env("PAYDIAL_TRUSTED_PROXIES"))
    widget_ip_charge_limit: RateLimits = Field(
        "20/hour", validation_alias=_env("PAYDIAL_WIDGET_IP_CHARGE_LIMIT")
    )
    widget_ip_decline_limit: RateLimits = Field(
        "5/hour", validation_alias=_env("PAYDIAL_WIDGET_IP_DECLINE_LIMIT")
    )
    widget_project_charge_limit: RateLimits = Field(
        "600/minute", validation_alias=_env("PAYDIAL_WIDGET_PROJECT_CHARGE_LIMIT")
    )
    # The decline-rate breaker (payments.breaker): at least this many widget charges in the window,
    # more than this share of them declined, pauses the project's widget charges for a while.
    widget_breaker_min_attempts: int = Field(
        20, ge=1, validation_alias=_env("PAYDIAL_WIDGET_BREAKER_MIN_ATTEMPTS")
    )
    widget_breaker_decline_rate: float = Field(
        0.5, ge=0, lt=1, validation_alias=_env("PAYDIAL_WIDGET_BREAKER_DECLINE_RATE")
    )
    widget_breaker_window_minutes: int = Field(
        10, ge=1, validation_alias=_env("PAYDIAL_WIDGET_BREAKER_WINDOW_MINUTES")
    )
    widget_breaker_pause_minutes: int = Field(
        15, ge=1, validation_alias=_env("PAYDIAL_WIDGET_BREAKER_PAUSE_MINUTES")
    )
    sweep_interval_seconds: float = Field(
        5.0, gt=0, validation_alias=_env("PAYDIAL_SWEEP_INTERVAL")
    )
    # GET /v1/sessions/{id}/events: how often a stream looks for new status changes, and how
    # long one response lasts before the client reconnects with Last-Event-ID (api/events.py).
    events_poll_seconds: float = Field(0.5, gt=0, validation_alias=_env("PAYDIAL_EVENTS_POLL"))
    events_stream_seconds: float = Field(
        300.0, gt=0, validation_alias=_env("PAYDIAL_EVENTS_STREAM_SECONDS")
    )

    def secrets(self) -> Secrets:
        """The resolved secrets; a process without them must not start."""
        if self.secret_key is None or self.twilio_auth_token is None:
            raise MissingSecrets(
                [env for name, env in SECRET_VARIABLES.items() if getattr(self, name) is None]
            )
        return Secrets(
            self.secret_key.get_secret_value(), self.twilio_auth_token.get_secret_value()
        )

    @property
    def embedded(self) -> bool:
        """True for the one-process default: SQLite and no Redis."""
        return self.database_url.startswith("sqlite") and not self.redis_url

    @property
    def local_secrets_path(self) -> Path:
        """The one file every `paydial` command reads generated secrets from (payments.local)."""
        return local_secrets_path(self.paydial_home)

    def with_local_secrets(self) -> Settings:
        """Fill missing secrets from (or into) `local_secrets_path`, for the embedded setup only.

        A production deployment (PostgreSQL or Redis) must set its secrets explicitly.
        """
        missing = [name for name in SECRET_VARIABLES if getattr(self, name) is None]
        if not missing:
            return self
        if not self.embedded:
            raise MissingSecrets([SECRET_VARIABLES[name] for name in missing])
        stored = ensure_local_secrets(self.local_secrets_path)
        return self.model_copy(update={name: SecretStr(stored[name]) for name in missing})
