"""Which payment session an incoming call is for, in PRODUCT.md's order; binding is once per call.

1. the SIP request-URI user part (`To` = `sip:<session_id>@<PAYDIAL_SIP_DOMAIN>`),
2. the `X-Paydial-Session` SIP header (`SipHeader_X-Paydial-Session`),
3. the caller ID (`From`, E.164) of its one `pending` voice session,
4. the 6-digit access code the caller keys (the flow asks; `find_by_access_code` looks up).

Caller ID is a weak credential on a number many merchants share: when it matches more than one
bindable pending session (of one project or of several), the call is not bound by guessing; the
caller is told why and asked for the access code of the payment they are calling about.

A candidate is bindable while `pending` (or `collecting` on this very CallSid, for a repeated
webhook) and not expired; terminal sessions and sessions bound to another call never are. Binding
pushes `expires_at` to at least the end of the longest call (`payments.sessions.bind_window`), so
a session never expires under a live call. A call that names a session which already ended (its
SIP address, header, or a caller whose latest session ended recently) is told so instead of being
asked for an access code (`ended_session_for`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session as Tx

from payments.errors import NotFound
from payments.model import Channel, Status
from payments.sessions import (
    ACTIVE,
    CALL_BOUND,
    bind_window,
    expire_if_due,
    load_session,
    load_session_and_project,
    payment_in_flight,
    transition,
)
from payments.store import Database, PaymentSession, Project

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_SIP_USER = re.compile(r"^<?sips?:([^@;?>]+)@", re.IGNORECASE)
# A caller ID calling back this soon after its latest session ended is told how it ended.
RECENTLY_ENDED = CALL_BOUND


@dataclass(frozen=True)
class CallParams:
    """The parts of Twilio's voice webhook that can name a session."""

    call_sid: str
    to: str = ""
    sip_header: str = ""
    caller: str = ""


def sip_user(uri: str) -> str | None:
    """`sip:abc@host;transport=tls` -> `abc`."""
    match = _SIP_USER.match(uri.strip())
    return match.group(1) if match else None


@dataclass(frozen=True)
class CallBinding:
    """What binding found: the bound session, or None and whether caller ID was ambiguous.

    `project` is the bound session's: holding it keeps it in the transaction's identity map (which
    holds rows only while something refers to them), so the status change and the greeting that
    follow read it from there instead of from the database each.
    """

    session: PaymentSession | None
    ambiguous_caller_id: bool = False
    project: Project | None = None


def bind_call(tx: Tx, call: CallParams, *, now: datetime) -> CallBinding:
    """Bind the call to the one session its parameters name; unbound: ask for the code."""
    for how, session_id in _named(call):
        found = _bindable(tx, session_id, call.call_sid, now)
        if found is not None:
            session, project = found
            _bind(tx, session, call.call_sid, now, how=how)
            return CallBinding(session, project=project)
    if not E164.match(call.caller):
        return CallBinding(None)
    pending = [
        found
        for session_id in _pending_for_caller(tx, call.caller, now)
        if (found := _bindable(tx, session_id, call.call_sid, now)) is not None
    ]
    if len(pending) != 1:
        return CallBinding(None, ambiguous_caller_id=len(pending) > 1)
    [(session, project)] = pending
    _bind(tx, session, call.call_sid, now, how="caller_id")
    return CallBinding(session, project=project)


def find_by_access_code(
    tx: Tx, code: str, *, call_sid: str, now: datetime
) -> PaymentSession | None:
    """The bindable voice session with this access code (not yet bound: the flow binds next)."""
    session_id = tx.scalar(
        select(PaymentSession.id).where(
            PaymentSession.access_code == code,
            PaymentSession.channel == Channel.VOICE.value,
            PaymentSession.status.in_(ACTIVE),
        )
    )
    found = None if session_id is None else _bindable(tx, session_id, call_sid, now)
    return None if found is None else found[0]


def bind_by_access_code(
    tx: Tx, session_id: str, *, call_sid: str, now: datetime
) -> PaymentSession | None:
    """Bind after the caller keyed a matching code; None when someone else bound it meanwhile."""
    found = _bindable(tx, session_id, call_sid, now)
    if found is None:
        return None
    _bind(tx, found[0], call_sid, now, how="access_code")
    return found[0]


def ended_session_for(tx: Tx, call: CallParams, *, now: datetime) -> PaymentSession | None:
    """The voice session an unbindable call names when that session has already ended: by SIP
    URI or header, else the caller ID's most recent session if it ended within the hour."""
    for how, session_id in _named_or_latest(tx, call):
        try:
            session = load_session(tx, session_id, now=now)
        except NotFound:
            continue
        if session.channel != Channel.VOICE.value or not Status(session.status).is_terminal:
            continue
        if how == "caller_id" and now - (session.completed_at or now) > RECENTLY_ENDED:
            continue
        return session
    return None


def _named_or_latest(tx: Tx, call: CallParams) -> Iterator[tuple[str, str]]:
    """The sessions a call names whatever their status: SIP URI, SIP header, the caller's latest."""
    yield from _named(call)
    if E164.match(call.caller):
        latest = tx.scalar(
            select(PaymentSession.id)
            .where(
                PaymentSession.caller == call.caller,
                PaymentSession.channel == Channel.VOICE.value,
            )
            .order_by(PaymentSession.created_at.desc())
            .limit(1)
        )
        if latest is not None:
            yield "caller_id", latest


def _named(call: CallParams) -> Iterator[tuple[str, str]]:
    """(how, session id) for the sessions the call names itself, in the order PRODUCT.md gives."""
    user = sip_user(call.to)
    if user:
        yield "sip_uri", user
    if call.sip_header:
        yield "sip_header", call.sip_header.strip()


def _pending_for_caller(tx: Tx, caller: str, now: datetime) -> list[str]:
    """Up to two unexpired pending voice sessions for this caller ID: two already mean "ask"."""
    return list(
        tx.scalars(
            select(PaymentSession.id)
            .where(
                PaymentSession.caller == caller,
                PaymentSession.channel == Channel.VOICE.value,
                PaymentSession.status == Status.PENDING.value,
                PaymentSession.expires_at > now,
            )
            .order_by(PaymentSession.created_at.desc())
            .limit(2)
        )
    )


def _bindable(
    tx: Tx, session_id: str, call_sid: str, now: datetime
) -> tuple[PaymentSession, Project] | None:
    """The session, locked, and its project, when this call may bind it."""
    try:
        session, project = load_session_and_project(tx, session_id, now=now, for_update=True)
    except NotFound:
        return None
    if session.channel != Channel.VOICE.value or session.status not in ACTIVE:
        return None
    if session.call_sid not in (None, call_sid):
        return None
    return session, project


def _bind(tx: Tx, session: PaymentSession, call_sid: str, now: datetime, *, how: str) -> None:
    """Bind the session to the call."""
    session.call_sid = call_sid
    session.updated_at = now
    session.expires_at = bind_window(session.expires_at, now)
    transition(tx, session, Status.COLLECTING, cause="call_bound", now=now, detail={"by": how})


def session_for_call(tx: Tx, call_sid: str, *, now: datetime) -> PaymentSession | None:
    """The session bound to this CallSid, if any, locked for the caller's change."""
    session = tx.scalar(
        select(PaymentSession).where(PaymentSession.call_sid == call_sid).with_for_update()
    )
    if session is not None:
        expire_if_due(tx, session, now)
    return session


_RECORD_TRANSFER = (
    update(PaymentSession)
    .where(PaymentSession.call_sid == bindparam("sid"))
    .values(transfer_status=bindparam("dial_status"), updated_at=bindparam("now"))
    .returning(PaymentSession.status, PaymentSession.expires_at)
)


def record_transfer(
    db: Database, call_sid: str, dial_status: str | None, *, now: datetime
) -> str | None:
    """Keep how the transfer back went on the session bound to this CallSid; the session's status,
    or None when the call has none. One UPDATE on a bare connection (`Database.statements`): every
    call that goes back to its agent ends here, and an ORM session around the change cost more
    than the rest of the webhook. A session it finds still open past its time is then expired,
    as every read of it would (`expire_if_due`)."""
    with db.statements() as connection:
        row = connection.execute(
            _RECORD_TRANSFER, {"sid": call_sid, "dial_status": dial_status, "now": now}
        ).first()
    if row is None:
        return None
    if row.status in ACTIVE and now >= row.expires_at:
        with db.transaction() as tx:
            session = session_for_call(tx, call_sid, now=now)
            return session.status if session is not None else None
    return str(row.status)


def end_call(tx: Tx, call_sid: str, *, now: datetime) -> PaymentSession | None:
    """The call is over: its open session is abandoned, unless a payment attempt is unresolved
    (the gateway's answer, or reconciliation, decides then). Terminal sessions never change."""
    session = session_for_call(tx, call_sid, now=now)
    if session is None or Status(session.status).is_terminal:
        return session
    if not payment_in_flight(tx, session.id):
        transition(tx, session, Status.ABANDONED, cause="caller_hung_up", now=now)
    return session
