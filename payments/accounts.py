"""Accounts, projects and API keys. A key belongs to an account and carries its mode."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, Select, Table, bindparam, or_, select
from sqlalchemy.engine import Connection
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
# Those that need only a few columns read them as a row: an entity's loading and its place in the
# session's identity map cost about a quarter of such a look-up (measured on PostgreSQL).
_PROJECTS = cast(Table, Project.__table__)
_KEYS = cast(Table, ApiKey.__table__)


def _account_project_lookups(selected: Select[Any]) -> tuple[Select[Any], Select[Any]]:
    """`selected` from one project of an account: by slug, and by slug or id."""
    of_account = selected.where(_PROJECTS.c.account_id == bindparam("account_id"))
    return of_account.where(_PROJECTS.c.slug == bindparam("slug")), of_account.where(
        or_(_PROJECTS.c.slug == bindparam("slug"), _PROJECTS.c.id == bindparam("id"))
    )


_PROJECT_LOOKUPS = _account_project_lookups(select(Project))
_PROJECT_REF_LOOKUPS = _account_project_lookups(
    select(_PROJECTS.c.id, _PROJECTS.c.slug, _PROJECTS.c.settings)
)
_LIVE_KEY_BY_HASH = select(
    _KEYS.c.account_id, _KEYS.c.environment, _KEYS.c.prefix, _KEYS.c.key_hash
).where(_KEYS.c.key_hash == bindparam("digest"), _KEYS.c.revoked_at.is_(None))


@dataclass(frozen=True)
class ProjectRef:
    """What creating a session reads of its project."""

    id: str
    slug: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class Caller:
    """Who is calling the API: an account, in one mode."""

    account_id: str
    environment: Environment
    key_prefix: str

    @property
    def actor(self) -> str:
        """Who made a change, for the audit log: the key, never its secret part."""
        return f"api key {self.key_prefix}"


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
    project: Project = _find_account_project(tx, _PROJECT_LOOKUPS, account_id, identifier)[0]
    return project


def account_project_ref(db: Connection | Tx, account_id: str, identifier: str) -> ProjectRef:
    """`find_account_project`'s id, slug and settings, without loading the project."""
    found = _find_account_project(db, _PROJECT_REF_LOOKUPS, account_id, identifier)
    return ProjectRef(found.id, found.slug, found.settings)


def _find_account_project(
    db: Connection | Tx, lookups: tuple[Select[Any], Select[Any]], account_id: str, identifier: str
) -> Row[Any]:
    by_slug, by_slug_or_id = lookups
    try:
        project_id = str(uuid.UUID(identifier))
    except ValueError:  # not a UUID: the slug alone decides
        found = db.execute(by_slug, {"account_id": account_id, "slug": identifier}).first()
    else:
        found = db.execute(
            by_slug_or_id, {"account_id": account_id, "slug": identifier, "id": project_id}
        ).first()
    if found is None:
        raise NotFound("Project not found")
    return found


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


def authenticate(db: Connection | Tx, presented: str) -> Caller | None:
    """Who calls with the live key `presented`, or None: looked up by hash, compared in constant
    time. `db` may be a bare connection (`Database.statements`): every API request makes this
    look-up, and an ORM session around it nearly doubles its cost."""
    if not presented.startswith(("mvn_test_", "mvn_live_")):
        return None
    digest = hash_key(presented)
    key = db.execute(_LIVE_KEY_BY_HASH, {"digest": digest}).first()
    if key is None or not hmac.compare_digest(key.key_hash, digest):
        return None
    return Caller(key.account_id, Environment(key.environment), key.prefix)
