"""Dashboard users: people of an account who sign in with an email and an argon2-hashed password.

Failed sign-ins are counted per email and per client address (in the velocity table, so every web
process sees the same counts); past the limit, sign-in is refused, even with the right password,
until the window has moved on.

A user may add a second factor: a TOTP secret (RFC 6238, `pyotp`), stored sealed, asked for after
the password; wrong codes count as failed sign-ins.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session as Tx

from payments.crypto import Sealer
from payments.errors import Conflict, InvalidInput, NotFound, PaydialError
from payments.store import Account, DashboardUser
from payments.velocity import record, wait_for

EMAIL_FAILURES = 5  # per email address per window
ADDRESS_FAILURES = 20  # per client address per window
FAILURE_WINDOW = timedelta(minutes=15)
MIN_PASSWORD_CHARS = 12
TOTP_PURPOSE = "dashboard-totp"  # the sealer's key-derivation label
TOTP_ISSUER = "Paydial"
TOTP_DRIFT = 1  # codes of the 30-second step before and after are accepted too
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


def _refuse_while_throttled(tx: Tx, subjects: list[tuple[str, int]], now: datetime) -> None:
    waits = [wait_for(tx, subject, limit, FAILURE_WINDOW, now) for subject, limit in subjects]
    wait = max((w for w in waits if w is not None), default=None)
    if wait is not None:
        raise SignInThrottled(wait)


def _count_failure(tx: Tx, subjects: list[tuple[str, int]], now: datetime) -> None:
    for subject, _ in subjects:
        record(tx, subject, now)


def sign_in(
    tx: Tx, email: str, password: str, *, address: str, now: datetime
) -> DashboardUser | None:
    """The user with this email and password, else None (the failure is counted in `tx`).

    Raises SignInThrottled while the email or the address is over its failures, right password
    or not. An unknown email costs the same argon2 work as a wrong password. A user with a
    second factor is not signed in yet: `check_second_factor` comes next.
    """
    subjects = _subjects(email, address)
    _refuse_while_throttled(tx, subjects, now)
    user = tx.scalar(select(DashboardUser).where(DashboardUser.email == normalize_email(email)))
    try:
        _hasher.verify(user.password_hash if user else _UNKNOWN_USER_HASH, password)
        assert user is not None  # the stand-in hash verifies no password
    except (VerificationError, InvalidHashError):
        _count_failure(tx, subjects, now)
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    if user.totp_secret_sealed is None:
        user.last_login_at = now
    return user


def get_user(tx: Tx, user_id: str) -> DashboardUser | None:
    return tx.get(DashboardUser, user_id)


def new_totp_secret() -> str:
    """A fresh base32 TOTP secret, to be shown once and enabled by `enable_totp`."""
    return pyotp.random_base32()


def totp_uri(secret: str, email: str) -> str:
    """The `otpauth://` URI an authenticator app takes (typed or pasted: no QR code)."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=TOTP_ISSUER)


def _code_matches(secret: str, code: str, now: datetime) -> bool:
    code = code.strip().replace(" ", "")
    return code.isdigit() and pyotp.TOTP(secret).verify(code, for_time=now, valid_window=TOTP_DRIFT)


def enable_totp(
    tx: Tx, user_id: str, secret: str, code: str, *, sealer: Sealer, now: datetime
) -> bool:
    """Turn the second factor on when `code` proves the app has `secret`; False otherwise."""
    user = tx.get_one(DashboardUser, user_id)
    if not _code_matches(secret, code, now):
        return False
    user.totp_secret_sealed = sealer.seal(secret.encode())
    return True


def disable_totp(tx: Tx, user_id: str, code: str, *, sealer: Sealer, now: datetime) -> bool:
    """Turn the second factor off, given a current code from the app; False otherwise."""
    user = tx.get_one(DashboardUser, user_id)
    if user.totp_secret_sealed is None:
        return True
    if not _code_matches(sealer.open(user.totp_secret_sealed).decode(), code, now):
        return False
    user.totp_secret_sealed = None
    return True


def check_second_factor(
    tx: Tx, user_id: str, code: str, *, address: str, sealer: Sealer, now: datetime
) -> bool:
    """The code after a right password; a wrong one counts as a failed sign-in.

    Raises SignInThrottled while the email or the address is over its failures.
    """
    user = tx.get_one(DashboardUser, user_id)
    subjects = _subjects(user.email, address)
    _refuse_while_throttled(tx, subjects, now)
    if user.totp_secret_sealed is None:
        return True
    if not _code_matches(sealer.open(user.totp_secret_sealed).decode(), code, now):
        _count_failure(tx, subjects, now)
        return False
    user.last_login_at = now
    return True
