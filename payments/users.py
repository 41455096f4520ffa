"""Dashboard users: people of an account who sign in with an email and an argon2-hashed password.

Failed sign-ins are counted per email and per client address (in the velocity table, so every web
process sees the same counts); past the limit, sign-in is refused, even with the right password,
until the window has moved on.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session as Tx

from payments.errors import Conflict, InvalidInput, NotFound, PaydialError
from payments.store import Account, DashboardUser
from payments.velocity import record, wait_for

EMAIL_FAILURES = 5  # per email address per window
ADDRESS_FAILURES = 20  # per client address per window
FAILURE_WINDOW = timedelta(minutes=15)
MIN_PASSWORD_CHARS = 12
_hasher = PasswordHasher()
# Verified against when the email is unknown, so timing does not tell which emails exist.
_UNKNOWN_USER_HASH = _hasher.hash(secrets.token_urlsafe(32))


class SignInThrottled(PaydialError):
    """Too many failed sign-ins for this email or from this address."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many failed sign-ins. Try again later.")
        self.retry_after = retry_after


@dataclass(frozen=True)
class NewUser:
    user: DashboardUser
    password: str | None  # the generated one-time password, shown once; None when one was given


def normalize_email(email: str) -> str:
    return email.strip().lower()


def create_user(
    tx: Tx, email: str, account_name: str, *, now: datetime, password: str | None = None
) -> NewUser:
    """A user of the named account; without a password, a random one is made and returned once."""
    address = normalize_email(email)
    if "@" not in address or len(address) > 320:
        raise InvalidInput(("email",), "Give an email address", "value_error")
    account = tx.scalar(select(Account).where(Account.name == account_name))
    if account is None:
        raise NotFound(f"no account {account_name!r}")
    if tx.scalar(select(DashboardUser.id).where(DashboardUser.email == address)) is not None:
        raise Conflict(f"user {address!r} already exists")
    generated = None
    if password is None:
        password = generated = secrets.token_urlsafe(12)
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInput(
            ("password",), f"Use at least {MIN_PASSWORD_CHARS} characters", "too_short"
        )
    user = DashboardUser(
        account_id=account.id,
        email=address,
        password_hash=_hasher.hash(password),
        created_at=now,
    )
    tx.add(user)
    tx.flush()
    return NewUser(user, generated)


def _subjects(email: str, address: str) -> list[tuple[str, int]]:
    digest = hashlib.sha256(normalize_email(email).encode()).hexdigest()
    return [
        (f"signin-email:{digest}", EMAIL_FAILURES),
        (f"signin-from:{address}", ADDRESS_FAILURES),
    ]


def sign_in(
    tx: Tx, email: str, password: str, *, address: str, now: datetime
) -> DashboardUser | None:
    """The user with this email and password, else None (the failure is counted in `tx`).

    Raises SignInThrottled while the email or the address is over its failures, right password
    or not. An unknown email costs the same argon2 work as a wrong password.
    """
    subjects = _subjects(email, address)
    waits = [wait_for(tx, subject, limit, FAILURE_WINDOW, now) for subject, limit in subjects]
    wait = max((w for w in waits if w is not None), default=None)
    if wait is not None:
        raise SignInThrottled(wait)
    user = tx.scalar(select(DashboardUser).where(DashboardUser.email == normalize_email(email)))
    try:
        _hasher.verify(user.password_hash if user else _UNKNOWN_USER_HASH, password)
        assert user is not None  # the stand-in hash verifies no password
    except (VerificationError, InvalidHashError):
        for subject, _ in subjects:
            record(tx, subject, now)
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.last_login_at = now
    return user


def get_user(tx: Tx, user_id: str) -> DashboardUser | None:
    return tx.get(DashboardUser, user_id)
