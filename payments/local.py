"""What `paydial` commands find without building Settings: the defaults and the local secrets.

The embedded setup (SQLite, no Redis) generates its secrets once into one file that every
`paydial` command finds, wherever it runs: `$PAYDIAL_HOME/paydial-local.json`, else the per-user
data directory (platformdirs: `~/.local/share/paydial` on Linux). Standard library and
platformdirs only, so `paydial call` starts without importing pydantic.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

DEFAULT_DATABASE_URL = "sqlite:///paydial.db"
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
DEFAULT_PHONE_NUMBER = "+15005550006"
DEFAULT_SIP_DOMAIN = "paydial.sip.twilio.com"
HOME_VARIABLE = "PAYDIAL_HOME"
LOCAL_SECRETS_FILE = "paydial-local.json"
# Settings field -> the environment variable that sets it.
SECRET_VARIABLES = {"secret_key": "PAYDIAL_SECRET_KEY", "twilio_auth_token": "TWILIO_AUTH_TOKEN"}


class MissingSecrets(RuntimeError):
    """Production mode (PostgreSQL or Redis) without its secrets: nothing is generated there."""

    def __init__(self, variables: list[str]) -> None:
        self.variables = variables
        super().__init__(
            f"{' and '.join(variables)} must be set: with PostgreSQL or Redis configured, "
            "secrets are never generated (only the SQLite, no-Redis setup generates them)"
        )


def local_secrets_path(home: str | Path | None) -> Path:
    """The secrets file under `home` (PAYDIAL_HOME), or under the per-user data directory."""
    if home:
        return Path(home).expanduser() / LOCAL_SECRETS_FILE
    from platformdirs import user_data_path

    return user_data_path("paydial", appauthor=False) / LOCAL_SECRETS_FILE


def read_local_secrets(path: Path) -> dict[str, str]:
    """What the file holds; empty when it does not exist yet."""
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    return stored


def ensure_local_secrets(path: Path) -> dict[str, str]:
    """The file's secrets, generating (once, mode 0600) any it lacks."""
    stored = read_local_secrets(path)
    if all(name in stored for name in SECRET_VARIABLES):
        return stored
    generated = {
        "secret_key": secrets.token_urlsafe(32),
        "twilio_auth_token": secrets.token_hex(16),
    }
    stored = generated | stored
    path.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        file.write(json.dumps(stored))
    return stored
