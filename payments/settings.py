"""Settings from the environment (names as in PRODUCT.md "Running it")."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL_SECRETS_FILE = "paydial-local.json"


@dataclass(frozen=True)
class Secrets:
    """The secrets a running process has for certain: resolved once, never optional after."""

    secret_key: str = field(repr=False)
    twilio_auth_token: str = field(repr=False)


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Everything configurable; the defaults are the embedded, single-process setup."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore")

    database_url: str = Field("sqlite:///paydial.db", validation_alias=_env("DATABASE_URL"))
    redis_url: str | None = Field(None, validation_alias=_env("REDIS_URL"))
    public_url: str = Field("http://127.0.0.1:8000", validation_alias=_env("PAYDIAL_PUBLIC_URL"))
    twilio_auth_token: SecretStr | None = Field(None, validation_alias=_env("TWILIO_AUTH_TOKEN"))
    secret_key: SecretStr | None = Field(None, validation_alias=_env("PAYDIAL_SECRET_KEY"))
    phone_number: str = Field("+15005550006", validation_alias=_env("PAYDIAL_PHONE_NUMBER"))
    sip_domain: str = Field("paydial.sip.twilio.com", validation_alias=_env("PAYDIAL_SIP_DOMAIN"))
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
    # Flask-Limiter notation, per API key per endpoint.
    rate_limit_live: str = Field("20/minute", validation_alias=_env("PAYDIAL_RATE_LIMIT_LIVE"))
    rate_limit_test: str = Field("100/minute", validation_alias=_env("PAYDIAL_RATE_LIMIT_TEST"))
    # Failed payment attempts allowed per card and per caller within the window, across sessions.
    card_failure_limit: int = Field(5, ge=1, validation_alias=_env("PAYDIAL_CARD_FAILURE_LIMIT"))
    caller_failure_limit: int = Field(
        5, ge=1, validation_alias=_env("PAYDIAL_CALLER_FAILURE_LIMIT")
    )
    velocity_window_hours: int = Field(
        24, ge=1, validation_alias=_env("PAYDIAL_VELOCITY_WINDOW_HOURS")
    )
    # Card testing through the widget (Flask-Limiter notation): charges and declines per client
    # address, and per project; the project's decline limit pauses its widget charges.
    # How many reverse proxies in front of the web process append to X-Forwarded-For (Heroku's
    # router, a load balancer): the client address the widget limits count is the one they saw.
    trusted_proxies: int = Field(0, ge=0, validation_alias=_env("PAYDIAL_TRUSTED_PROXIES"))
    widget_ip_charge_limit: str = Field(
        "20/hour", validation_alias=_env("PAYDIAL_WIDGET_IP_CHARGE_LIMIT")
    )
    widget_ip_decline_limit: str = Field(
        "5/hour", validation_alias=_env("PAYDIAL_WIDGET_IP_DECLINE_LIMIT")
    )
    widget_project_charge_limit: str = Field(
        "600/minute", validation_alias=_env("PAYDIAL_WIDGET_PROJECT_CHARGE_LIMIT")
    )
    widget_project_decline_limit: str = Field(
        "100/hour", validation_alias=_env("PAYDIAL_WIDGET_PROJECT_DECLINE_LIMIT")
    )
    sweep_interval_seconds: float = Field(
        5.0, gt=0, validation_alias=_env("PAYDIAL_SWEEP_INTERVAL")
    )

    def secrets(self) -> Secrets:
        """The resolved secrets; a process without them must not start."""
        if self.secret_key is None or self.twilio_auth_token is None:
            raise RuntimeError("PAYDIAL_SECRET_KEY and TWILIO_AUTH_TOKEN must be set")
        return Secrets(
            self.secret_key.get_secret_value(), self.twilio_auth_token.get_secret_value()
        )

    @property
    def embedded(self) -> bool:
        """True for the one-process default: SQLite and no Redis."""
        return self.database_url.startswith("sqlite") and not self.redis_url

    def with_local_secrets(self, directory: Path) -> Settings:
        """Fill missing secrets from (or into) a local file, for the embedded setup only.

        A production deployment (PostgreSQL or Redis) must set its secrets explicitly.
        """
        if self.secret_key is not None and self.twilio_auth_token is not None:
            return self
        if not self.embedded:
            raise RuntimeError("PAYDIAL_SECRET_KEY and TWILIO_AUTH_TOKEN must be set in production")
        path = directory / LOCAL_SECRETS_FILE
        stored = json.loads(path.read_text()) if path.exists() else {}
        stored.setdefault("secret_key", secrets.token_urlsafe(32))
        stored.setdefault("twilio_auth_token", secrets.token_hex(16))
        path.write_text(json.dumps(stored))
        path.chmod(0o600)
        return self.model_copy(
            update={
                "secret_key": self.secret_key or SecretStr(stored["secret_key"]),
                "twilio_auth_token": self.twilio_auth_token
                or SecretStr(stored["twilio_auth_token"]),
            }
        )
