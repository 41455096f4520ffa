"""Dashboard users: people of an account who sign in with an email and an argon2-hashed password.

Failed sign-ins are counted per email and per client address (in the velocity table, so every web
process sees the same counts); past the limit, sign-in is refused, even with the right password,
until the window has moved on.

A user may add a second factor: a TOTP secret (RFC 6238, `pyotp`), stored sealed, asked for after
the password; wrong codes count as failed sign-ins. A code is good once: the user's last accepted
time step is kept, and a code of that step or an earlier one is refused (RFC 6238 section 5.2), so a
code seen over a shoulder or replayed from a captured form is worth nothing after its first use.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session as Tx

from payments.crypto import Sealer
from payments.errors import Conflict, InvalidInput, NotFound, PaydialError
from payments.store import Account, DashboardUser
from payments.velocity import record, waits_for

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
    waits = waits_for(tx, subjects, FAILURE_WINDOW, now)
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


def _matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step whose code `code` is, within the allowed drift around `now`; else None."""
    code = code.strip().replace(" ", "")
    if not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    step = totp.timecode(now)
    for offset in range(-TOTP_DRIFT, TOTP_DRIFT + 1):
        if hmac.compare_digest(totp.at(now, counter_offset=offset), code):
            return step + offset
    return None


def _use_code(tx: Tx, user: DashboardUser, secret: str, code: str, now: datetime) -> bool:
    """True when `code` is right and of a step later than any used before; that step is spent.

    The conditional update makes two requests racing with one code accept it once.
    """
    step = _matching_step(secret, code, now)
    if step is None:
        return False
    spent: CursorResult[Any] = tx.execute(  # type: ignore[assignment]  # an UPDATE's result
        update(DashboardUser)
        .where(
            DashboardUser.id == user.id,
            or_(DashboardUser.totp_last_step.is_(None), DashboardUser.totp_last_step < step),
        )
        .values(totp_last_step=step)
        .execution_options(synchronize_session=False)
    )
    return spent.rowcount == 1


def enable_totp(
    tx: Tx, user_id: str, secret: str, code: str, *, sealer: Sealer, now: datetime
) -> bool:
    """Turn the second factor on when `code` proves the app has `secret`; False otherwise."""
    user = tx.get_one(DashboardUser, user_id)
    step = _matching_step(secret, code, now)
    if step is None:
        return False
    user.totp_secret_sealed = sealer.seal(secret.encode())
    user.totp_last_step = step  # a new secret: no earlier step to compare with, this one is spent
    return True


def disable_totp(tx: Tx, user_id: str, code: str, *, sealer: Sealer, now: datetime) -> bool:
    """Turn the second factor off, given a current code from the app; False otherwise."""
    user = tx.get_one(DashboardUser, user_id)
    if user.totp_secret_sealed is None:
        return True
    if not _use_code(tx, user, sealer.open(user.totp_secret_sealed).decode(), code, now):
        return False
    user.totp_secret_sealed = None
    user.totp_last_step = None
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
    if not _use_code(tx, user, sealer.open(user.totp_secret_sealed).decode(), code, now):
        _count_failure(tx, subjects, now)
        return False
    user.last_login_at = now
    return True
