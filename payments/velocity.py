"""Abuse controls across sessions and days: failed payment attempts counted per caller and per card.

A card is known only by a keyed HMAC of its number (the key is derived from PAYDIAL_SECRET_KEY),
so the counters stop card testing (say, 1,000 security codes tried on one card over many
sessions) without the database ever holding anything that leads back to the card number.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session as Tx

from payments.errors import PaydialError
from payments.services import Services
from payments.store import VelocityEvent

KEY_PURPOSE = b"card-velocity"


class VelocityLimited(PaydialError):
    """Too many failed attempts: nothing is sent to the gateway until `retry_after` seconds pass."""

    message = "Too many failed payment attempts. Please try again later."

    def __init__(self, retry_after: int) -> None:
        super().__init__(self.message)
        self.retry_after = retry_after


class CardLocked(VelocityLimited):
    """This card failed too often, whichever session or caller tried it."""

    message = "This card cannot be used right now because of too many failed attempts."


class CallerLockedOut(VelocityLimited):
    """This phone number failed too often; the IVR says so and ends the payment."""

    message = "Too many failed payment attempts from this phone number. Please try again later."


def card_key(secret_key: str, number: str) -> str:
    """HMAC-SHA256 of the card number under a key derived for this purpose only."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_PURPOSE).derive(
        secret_key.encode()
    )
    return hmac.new(key, number.encode(), hashlib.sha256).hexdigest()


def services_card_key(services: Services, number: str) -> str:
    return card_key(services.secrets.secret_key, number)


def _subjects(caller: str | None, card: str | None) -> list[str]:
    return ([f"caller:{caller}"] if caller else []) + ([f"card:{card}"] if card else [])


# The `limit`-th most recent failure of a subject inside the window, if it has that many: one
# index range read on (subject, at). Built once: a voice webhook and every payment ask it.
_NTH_RECENT = (
    select(VelocityEvent.at)
    .where(VelocityEvent.subject == bindparam("subject"), VelocityEvent.at > bindparam("since"))
    .order_by(VelocityEvent.at.desc())
    .limit(1)
    .offset(bindparam("skip"))
)


def wait_for(tx: Tx, subject: str, limit: int, window: timedelta, now: datetime) -> int | None:
    """Seconds until `subject` may try again, or None when it is under its limit."""
    oldest = tx.scalar(_NTH_RECENT, {"subject": subject, "since": now - window, "skip": limit - 1})
    if oldest is None:
        return None
    return max(1, int((oldest + window - now).total_seconds()) + 1)


def check(
    tx: Tx, services: Services, *, caller: str | None, card: str | None, now: datetime
) -> None:
    """Raise CallerLockedOut or CardLocked when either has used up its failures in the window."""
    settings = services.settings
    wait = caller_lockout(tx, services, [caller], now=now)
    if wait is not None:
        raise CallerLockedOut(wait)
    if card:
        window = timedelta(hours=settings.velocity_window_hours)
        wait = wait_for(tx, f"card:{card}", settings.card_failure_limit, window, now)
        if wait is not None:
            raise CardLocked(wait)


def caller_lockout(
    tx: Tx, services: Services, callers: Iterable[str | None], *, now: datetime
) -> int | None:
    """Seconds until all of these numbers may try again; None when none of them is locked out.

    The IVR asks before it collects a card, for the number calling and the session's caller.
    """
    settings = services.settings
    window = timedelta(hours=settings.velocity_window_hours)
    waits = (
        wait_for(tx, f"caller:{caller}", settings.caller_failure_limit, window, now)
        for caller in dict.fromkeys(c for c in callers if c)
    )
    return max((wait for wait in waits if wait is not None), default=None)


def record(tx: Tx, subject: str, now: datetime, *, environment: str | None = None) -> None:
    """Count one failure against a subject (a caller, a card key, a sign-in email or address)."""
    tx.add(VelocityEvent(subject=subject, at=now, environment=environment))


def record_failure(
    tx: Tx, *, caller: str | None, card: str | None, environment: str, now: datetime
) -> None:
    """Count one failed attempt against the caller and the card."""
    for subject in _subjects(caller, card):
        record(tx, subject, now, environment=environment)


def reset(tx: Tx, environment: str) -> int:
    """Forget every failure counted in one mode (`paydial velocity reset --test`)."""
    result = tx.execute(delete(VelocityEvent).where(VelocityEvent.environment == environment))
    return int(getattr(result, "rowcount", 0) or 0)


def purge_expired(services: Services) -> int:
    """Forget failures older than the window; they can no longer lock anyone out."""
    cutoff = services.clock() - timedelta(hours=services.settings.velocity_window_hours)
    with services.db.transaction() as tx:
        result = tx.execute(delete(VelocityEvent).where(VelocityEvent.at <= cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
