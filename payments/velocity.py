"""Abuse controls across sessions and days: failed payment attempts counted per caller and per card.

A card is known only by a keyed HMAC of its number (the key is derived from PAYDIAL_SECRET_KEY),
so the counters stop card testing (say, 1,000 security codes tried on one card over many
sessions) without the database ever holding anything that leads back to the card number.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import ScalarSelect, bindparam, delete, select
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


def _nth_recent(i: int) -> ScalarSelect[datetime]:
    """The `limit`-th most recent failure of subject `i` inside the window, if it has that many:
    one index range read on (subject, at)."""
    return (
        select(VelocityEvent.at)
        .where(
            VelocityEvent.subject == bindparam(f"subject{i}"),
            VelocityEvent.at > bindparam("since"),
        )
        .order_by(VelocityEvent.at.desc())
        .limit(1)
        .offset(bindparam(f"skip{i}"))
        .scalar_subquery()
    )


# One statement for up to MAX_SUBJECTS subjects, each its own subquery; built once: a voice
# webhook, every payment and every sign-in ask it.
MAX_SUBJECTS = 2
_NTH_RECENT = {n: select(*map(_nth_recent, range(n))) for n in range(1, MAX_SUBJECTS + 1)}


def waits_for(
    tx: Tx, subjects: Sequence[tuple[str, int]], window: timedelta, now: datetime
) -> list[int | None]:
    """For each (subject, limit): seconds until it may try again, or None when it is under its
    limit. One read."""
    if not subjects:
        return []
    params: dict[str, object] = {"since": now - window}
    for i, (subject, limit) in enumerate(subjects):
        params |= {f"subject{i}": subject, f"skip{i}": limit - 1}
    oldest = tx.execute(_NTH_RECENT[len(subjects)], params).one()
    return [
        None if at is None else max(1, int((at + window - now).total_seconds()) + 1)
        for at in oldest
    ]


def check(
    tx: Tx, services: Services, *, caller: str | None, card: str | None, now: datetime
) -> None:
    """Raise CallerLockedOut or CardLocked when either has used up its failures in the window."""
    settings = services.settings
    limits: list[tuple[type[VelocityLimited], str, int]] = []
    if caller:
        limits.append((CallerLockedOut, f"caller:{caller}", settings.caller_failure_limit))
    if card:
        limits.append((CardLocked, f"card:{card}", settings.card_failure_limit))
    window = timedelta(hours=settings.velocity_window_hours)
    waits = waits_for(tx, [(subject, limit) for _, subject, limit in limits], window, now)
    for (refusal, _, _), wait in zip(limits, waits, strict=True):  # the caller's comes first
        if wait is not None:
            raise refusal(wait)


def caller_lockout(
    tx: Tx, services: Services, callers: Iterable[str | None], *, now: datetime
) -> int | None:
    """Seconds until all of these numbers may try again; None when none of them is locked out.

    The IVR asks before it collects a card, for the number calling and the session's caller.
    """
    settings = services.settings
    window = timedelta(hours=settings.velocity_window_hours)
    subjects = [
        (f"caller:{caller}", settings.caller_failure_limit)
        for caller in dict.fromkeys(c for c in callers if c)
    ]
    return max((w for w in waits_for(tx, subjects, window, now) if w is not None), default=None)


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
