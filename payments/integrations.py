"""Agent-platform integrations of a project: its integration token (whk_…) and Retell API key.

A platform that cannot send the merchant's API key (Retell's custom functions, Vapi's server
secret) presents the project's integration token instead. Like API keys, the token is stored
as a SHA-256 hash only and belongs to one mode; a new one replaces the old at once.
"""

from __future__ import annotations

import hmac
import secrets
import string
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session as Tx

from payments.accounts import get_project_by_slug, hash_key
from payments.crypto import Sealer
from payments.model import Environment
from payments.store import Project, ProjectIntegration

TOKEN_PREFIX = "whk_"  # noqa: S105  # a prefix, not a secret
TOKEN_RANDOM_LENGTH = 32
RETELL_KEY_PURPOSE = "retell-api-key"


@dataclass(frozen=True)
class IntegrationAccess:
    """What a valid integration token opens: one project, in one mode."""

    project: Project
    environment: Environment


def _integration(tx: Tx, project: Project, environment: Environment) -> ProjectIntegration:
    row = tx.scalar(
        select(ProjectIntegration).where(
            ProjectIntegration.project_id == project.id,
            ProjectIntegration.environment == environment.value,
        )
    )
    if row is None:
        row = ProjectIntegration(project_id=project.id, environment=environment.value)
        tx.add(row)
    return row


def issue_integration_token(tx: Tx, slug: str, environment: Environment, *, now: datetime) -> str:
    """A new token for the project in this mode (the previous one stops working); shown once."""
    alphabet = string.ascii_letters + string.digits
    token = TOKEN_PREFIX + "".join(secrets.choice(alphabet) for _ in range(TOKEN_RANDOM_LENGTH))
    row = _integration(tx, get_project_by_slug(tx, slug), environment)
    row.token_hash = hash_key(token)
    row.updated_at = now
    tx.flush()
    return token


def set_retell_key(
    tx: Tx, slug: str, environment: Environment, api_key: str, *, sealer: Sealer, now: datetime
) -> None:
    """Store the Retell API key that signs X-Retell-Signature; from then on it is required."""
    row = _integration(tx, get_project_by_slug(tx, slug), environment)
    row.retell_key_sealed = sealer.seal(api_key.encode())
    row.updated_at = now
    tx.flush()


def authenticate_integration(tx: Tx, slug: str, presented: str) -> IntegrationAccess | None:
    """The project and mode a token opens, when it is the current token of project `slug`."""
    if not presented.startswith(TOKEN_PREFIX):
        return None
    digest = hash_key(presented)
    found = tx.execute(
        select(Project, ProjectIntegration)
        .join(ProjectIntegration, ProjectIntegration.project_id == Project.id)
        .where(ProjectIntegration.token_hash == digest, Project.slug == slug)
    ).first()
    if found is None:
        return None
    project, row = found
    if row.token_hash is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return IntegrationAccess(project, Environment(row.environment))


def retell_key(tx: Tx, access: IntegrationAccess, sealer: Sealer) -> str | None:
    """The project's Retell API key in this mode, or None when none is configured."""
    row = tx.scalar(
        select(ProjectIntegration).where(
            ProjectIntegration.project_id == access.project.id,
            ProjectIntegration.environment == access.environment.value,
        )
    )
    if row is None or row.retell_key_sealed is None:
        return None
    return sealer.open(row.retell_key_sealed).decode()
