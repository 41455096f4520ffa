"""Accounts, projects and API keys. A key belongs to an account and carries its mode."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, or_, select
from sqlalchemy.orm import Session as Tx

from payments.errors import Conflict, InvalidInput, NotFound
from payments.model import Environment
from payments.project_settings import ProjectSettings
from payments.store import Account, ApiKey, Project

KEY_ALPHABET = string.ascii_letters + string.digits
KEY_RANDOM_LENGTH = 32
KEY_PREFIX_RANDOM_CHARS = 8  # shown back to identify a key; the other 24 stay secret
MIN_REVOKE_PREFIX = 12  # `mvn_test_` and 3 more: short enough to type, long enough to mean one key

# The look-ups every API request makes, built once: a statement built per call costs its
# expression objects and its cache key each time (SQLAlchemy memoizes the key per statement).
_ACCOUNT_PROJECT = select(Project).where(Project.account_id == bindparam("account_id"))
_PROJECT_BY_SLUG = _ACCOUNT_PROJECT.where(Project.slug == bindparam("slug"))
_PROJECT_BY_SLUG_OR_ID = _ACCOUNT_PROJECT.where(
    or_(Project.slug == bindparam("slug"), Project.id == bindparam("id"))
)
_KEY_BY_HASH = select(ApiKey).where(ApiKey.key_hash == bindparam("digest"))


@dataclass(frozen=True)
class IssuedKey:
    """A freshly made key: the plaintext exists only here, to be shown once."""

    plaintext: str
    prefix: str
    environment: Environment


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def create_project(tx: Tx, slug: str, *, now: datetime, account_name: str | None = None) -> Project:
    """Create a project; without an account name it gets a new account of its own."""
    if tx.scalar(select(Project).where(Project.slug == slug)) is not None:
        raise Conflict(f"project {slug!r} already exists")
    account = None
    if account_name is not None:
        account = tx.scalar(select(Account).where(Account.name == account_name))
    if account is None:
        account = Account(name=account_name or slug, created_at=now)
        tx.add(account)
        tx.flush()
    project = Project(
        account_id=account.id,
        slug=slug,
        name=slug,
        settings=ProjectSettings().model_dump(mode="json"),
        created_at=now,
    )
    tx.add(project)
    tx.flush()
    return project


def get_project_by_slug(tx: Tx, slug: str) -> Project:
    project = tx.scalar(select(Project).where(Project.slug == slug))
    if project is None:
        raise NotFound(f"no project {slug!r}")
    return project


def find_account_project(tx: Tx, account_id: str, identifier: str) -> Project:
    """A project of this account by UUID or slug; anything else is NotFound."""
    try:
        project_id = str(uuid.UUID(identifier))
    except ValueError:  # not a UUID: the slug alone decides
        project = tx.scalar(_PROJECT_BY_SLUG, {"account_id": account_id, "slug": identifier})
    else:
        project = tx.scalar(
            _PROJECT_BY_SLUG_OR_ID, {"account_id": account_id, "slug": identifier, "id": project_id}
        )
    if project is None:
        raise NotFound("Project not found")
    return project


def account_projects(tx: Tx, account_id: str) -> list[Project]:
    """The account's projects, oldest first."""
    return list(
        tx.scalars(
            select(Project)
            .where(Project.account_id == account_id)
            .order_by(Project.created_at, Project.slug)
        )
    )


def issue_key(tx: Tx, slug: str, environment: Environment, *, now: datetime) -> IssuedKey:
    """Make a key for the account owning `slug`; only its hash is stored."""
    project = get_project_by_slug(tx, slug)
    random_part = "".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_RANDOM_LENGTH))
    plaintext = f"mvn_{environment.value}_{random_part}"
    prefix = plaintext[: len(f"mvn_{environment.value}_") + KEY_PREFIX_RANDOM_CHARS]
    tx.add(
        ApiKey(
            account_id=project.account_id,
            prefix=prefix,
            key_hash=hash_key(plaintext),
            environment=environment.value,
            created_at=now,
        )
    )
    tx.flush()
    return IssuedKey(plaintext=plaintext, prefix=prefix, environment=environment)


def revoke_key(tx: Tx, prefix: str, *, now: datetime, account_id: str | None = None) -> ApiKey:
    """Revoke the one key that starts with `prefix` (at least 12 characters), or the whole key.

    Only a key's first 17 characters are stored in the clear, so a longer prefix must be the
    whole key (found by its hash). Several matches name them all and revoke none. With
    `account_id`, only that account's keys are candidates (the dashboard's revoke).
    """
    mine = [] if account_id is None else [ApiKey.account_id == account_id]
    if len(prefix) < MIN_REVOKE_PREFIX:
        raise InvalidInput(
            ("prefix",), f"give at least {MIN_REVOKE_PREFIX} characters of the key, got {prefix!r}"
        )
    stored = len("mvn_test_") + KEY_PREFIX_RANDOM_CHARS
    if stored < len(prefix) != stored - KEY_PREFIX_RANDOM_CHARS + KEY_RANDOM_LENGTH:
        raise InvalidInput(
            ("prefix",), f"give at most the key's first {stored} characters, or the whole key"
        )
    if len(prefix) > stored:
        query = select(ApiKey).where(ApiKey.key_hash == hash_key(prefix), *mine)
        matches = list(tx.scalars(query))
    else:
        query = select(ApiKey).where(ApiKey.prefix.startswith(prefix, autoescape=True), *mine)
        matches = list(tx.scalars(query.order_by(ApiKey.created_at, ApiKey.prefix)))
    if not matches:
        raise NotFound("no such key" if len(prefix) > stored else f"no key starts with {prefix!r}")
    if len(matches) > 1:
        listed = ", ".join(
            f"{key.prefix} ({key.environment}{', revoked' if key.revoked_at else ''})"
            for key in matches
        )
        raise Conflict(f"{prefix!r} matches {len(matches)} keys: {listed}; give more characters")
    [key] = matches
    if key.revoked_at is None:
        key.revoked_at = now
    return key


def authenticate(tx: Tx, presented: str) -> ApiKey | None:
    """The live key matching `presented`, or None: looked up by hash, compared in constant time."""
    if not presented.startswith(("mvn_test_", "mvn_live_")):
        return None
    digest = hash_key(presented)
    key = tx.scalar(_KEY_BY_HASH, {"digest": digest})
    if key is None or key.revoked_at is not None:
        return None
    return key if hmac.compare_digest(key.key_hash, digest) else None
