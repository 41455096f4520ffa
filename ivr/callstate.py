"""Transient, encrypted per-call state keyed by CallSid: in Redis when configured, else in-process.

Card digits live here and nowhere else between webhooks, so everything stored is AES-GCM
ciphertext (``Sealer(secret, "callstate")``) under a short TTL, and is deleted the moment the
gateway answers, the call ends or the flow fails; only a card already handed to its payment job
outlives the call, until the job takes it or ``CARD_TTL`` runs out. ``CallStates`` is the typed
API the webhook layer and the gateway job use:

- ``get(call_sid) -> CallState | None``, ``put(call_sid, state, ttl=600, context=...)``,
  ``delete(call_sid)`` (everything, a card handed to the gateway job included), ``close(call_sid)``
  (the call is over: everything but a handed-over card and its ``ParkedPayment``);
- ``load(call_sid) -> LiveCall | None``: what a webhook needs, in one read: the state, the bound
  session's ``FlowContext`` sealed with it, and whether that session has ended since
  (``note_session_ended(call_sid)``: ``ivr.wiring`` has the database call it whenever a
  transaction that ended a call's session commits: cancelled, expired, paid...). A webhook reads
  the session again only then, so a cancel or an expiry is still said at the caller's next key.
  It also says which attempt's payment job last finished (``note_answered``, which the job calls
  once it has recorded its result): until then a hold poll has nothing to read in the database;
- ``wait_for_news(call_sid, seconds)``: a hold poll waits here, in its web thread, for either note
  (the job answered, the session ended) instead of only learning of it at its next poll; a
  process lets at most ``waiters`` polls wait at once, so waiting never takes every thread;
- ``park(call_sid, payment, card)`` / ``take_card(call_sid)``: the card of a ``StartPayment``
  waits here for the gateway job, which takes it exactly once (atomic get-and-delete); the
  ``ParkedPayment`` (which attempt, and until when its card waits) outlives the card, so the
  call's end leaves the session to that payment and a sweep can time out one whose job never came;
- ``claim(key, ttl) -> bool``: true for the first caller only, so a webhook Twilio delivers twice
  starts one gateway call (``claim(f"{session_id}:{attempt}", ...)``);
- ``put_hand_back(call_sid, hand_back)`` / ``hand_back(call_sid)``: where the caller goes and in
  which language the apology is, kept from binding on so that a call can still be handed back
  when the database is unreachable.

A value that fails authentication raises ``DecryptionError``: tampered, or stored for another call.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any, Protocol

import redis

from ivr.flow import CallState, FlowContext, KeyedCard
from ivr.transfer import Transfer
from payments.crypto import DecryptionError, Sealer
from payments.jobs import PAYMENT_WAIT
from payments.services import Services
from payments.sessions import CALL_BOUND

DEFAULT_TTL = 600
CALL_TTL = int(CALL_BOUND.total_seconds())  # as long as any call: what must outlive its turns
# The longest a card handed to its payment job waits for that job (as long as the job waits for a
# worker); then the payment times out.
CARD_TTL = PAYMENT_WAIT
KEY_PREFIX = "paydial:call:"


@dataclass(frozen=True)
class ParkedPayment:
    """A payment attempt handed to a job, whose card waits in call state until `until`."""

    session_id: str
    attempt: int
    until: datetime

    def to_bytes(self) -> bytes:
        return json.dumps({**asdict(self), "until": self.until.isoformat()}).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> ParkedPayment:
        data = json.loads(raw)
        return cls(data["session_id"], data["attempt"], datetime.fromisoformat(data["until"]))


@dataclass(frozen=True)
class HandBack:
    """A bound call's way back: the `<Dial>` target (None: hang up) and the caller's language.

    `charging` is the same target signed with `X-Paydial-Status=processing`, for a caller handed
    back while a charge is with the gateway and the database cannot say more.
    """

    language: str
    transfer: Transfer | None = None
    charging: Transfer | None = None

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> HandBack:
        data = json.loads(raw)
        transfer, charging = (
            Transfer(**data[name]) if data.get(name) else None for name in ("transfer", "charging")
        )
        return cls(data["language"], transfer, charging)


@dataclass(frozen=True)
class ClosedCall:
    """What a call left behind when it ended (`CallStates.close`)."""

    payment: ParkedPayment | None  # the payment last handed to a job; its card may be gone
    # A transaction that ended the call's session left a note (`note_session_ended`): the session
    # is terminal, so there is nothing to close.
    session_ended: bool


@dataclass(frozen=True)
class LiveCall:
    """A call's state as a webhook finds it (`CallStates.load`)."""

    state: CallState
    sealed_context: dict[str, Any] | None  # None: unbound, or sealed before contexts were
    session_ended: bool  # since the context was sealed: read the session again
    answered: int | None = None  # the latest attempt whose payment job has finished

    def context(self, today: date) -> FlowContext | None:
        """The sealed context, unless the session ended since or none was sealed."""
        return None if self.session_ended else self.sealed(today)

    def sealed(self, today: date) -> FlowContext | None:
        """The sealed context as it was, for a webhook that reads the session's status itself."""
        if self.sealed_context is None:
            return None
        return FlowContext.from_dict(self.sealed_context, today=today)


class CallStateStore(Protocol):
    """Raw storage for sealed bytes with expiry; knows nothing of calls or cards."""

    def load(self, key: str) -> bytes | None: ...

    def load_many(self, *keys: str) -> list[bytes | None]:
        """Several keys in one round trip."""
        ...

    def save(self, key: str, value: bytes, ttl: int) -> None: ...

    def take(self, key: str) -> bytes | None:
        """Return and delete in one atomic step."""
        ...

    def delete(self, *keys: str) -> None: ...

    def claim(self, key: str, ttl: int) -> bool:
        """Set the key only if absent; true when this caller set it."""
        ...

    def save_and_wake(self, key: str, value: bytes, ttl: int, wake: str) -> None:
        """`save`, and wake whoever waits on `wake` (or the next to wait there), at once."""
        ...

    def wait(self, wake: str, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a wake on `wake` and consume it; whether one came."""
        ...


class RedisCallStateStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def load(self, key: str) -> bytes | None:
        value = self._redis.get(key)
        return value if isinstance(value, bytes) else None

    def load_many(self, *keys: str) -> list[bytes | None]:
        return [v if isinstance(v, bytes) else None for v in self._redis.mget(keys)]

    def save(self, key: str, value: bytes, ttl: int) -> None:
        self._redis.set(key, value, ex=ttl)

    def take(self, key: str) -> bytes | None:
        value = self._redis.getdel(key)
        return value if isinstance(value, bytes) else None

    def delete(self, *keys: str) -> None:
        self._redis.delete(*keys)

    def claim(self, key: str, ttl: int) -> bool:
        return bool(self._redis.set(key, b"1", nx=True, ex=ttl))

    def save_and_wake(self, key: str, value: bytes, ttl: int, wake: str) -> None:
        # One round trip; the wake is a one-element list a waiter's BLPOP takes.
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(key, value, ex=ttl)
        pipe.lpush(wake, b"1")
        pipe.ltrim(wake, 0, 0)
        pipe.expire(wake, ttl)
        pipe.execute()

    def wait(self, wake: str, timeout: float) -> bool:
        return self._redis.blpop([wake], timeout=timeout) is not None


class MemoryCallStateStore:
    """The embedded default: a dict behind a lock, expiring by an injectable monotonic clock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._woken = threading.Condition(self._lock)
        self._items: dict[str, tuple[bytes, float]] = {}

    def _live(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            del self._items[key]
            return None
        return item[0]

    def load(self, key: str) -> bytes | None:
        with self._lock:
            return self._live(key)

    def load_many(self, *keys: str) -> list[bytes | None]:
        with self._lock:
            return [self._live(key) for key in keys]

    def save(self, key: str, value: bytes, ttl: int) -> None:
        with self._lock:
            self._items[key] = (value, self._clock() + ttl)

    def take(self, key: str) -> bytes | None:
        with self._lock:
            value = self._live(key)
            self._items.pop(key, None)
            return value

    def delete(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._items.pop(key, None)

    def claim(self, key: str, ttl: int) -> bool:
        with self._lock:
            if self._live(key) is not None:
                return False
            self._items[key] = (b"1", self._clock() + ttl)
            return True

    def save_and_wake(self, key: str, value: bytes, ttl: int, wake: str) -> None:
        with self._lock:
            expires = self._clock() + ttl
            self._items[key] = (value, expires)
            self._items[wake] = (b"1", expires)
            self._woken.notify_all()

    def wait(self, wake: str, timeout: float) -> bool:
        with self._woken:
            woken = self._woken.wait_for(lambda: self._live(wake) is not None, timeout)
            self._items.pop(wake, None)
            return woken


class CallStates:
    """Typed, sealed access to a ``CallStateStore``; values are bound to their CallSid.

    `waiters`: how many hold polls of this process may wait for news at once (none by default).
    """

    def __init__(self, store: CallStateStore, secret: str, *, waiters: int = 0) -> None:
        self._store = store
        self._sealer = Sealer(secret, "callstate")
        self._waiters = threading.BoundedSemaphore(waiters) if waiters > 0 else None

    def __repr__(self) -> str:
        return f"CallStates({type(self._store).__name__})"

    def get(self, call_sid: str) -> CallState | None:
        raw = self._open(call_sid, self._store.load(_state_key(call_sid)))
        return None if raw is None else CallState.from_bytes(raw)

    def load(self, call_sid: str) -> LiveCall | None:
        sealed, ended, answered = self._store.load_many(
            _state_key(call_sid), _ended_key(call_sid), _answered_key(call_sid)
        )
        raw = self._open(call_sid, sealed)
        if raw is None:
            return None
        data = json.loads(raw)
        return LiveCall(
            CallState.from_dict(data),
            data.get("context"),
            ended is not None,
            int(answered) if answered is not None else None,
        )

    def is_live(self, call_sid: str) -> bool:
        """Whether the call still has flow state (every webhook renews it; hang-up deletes it)."""
        return self._store.load(_state_key(call_sid)) is not None

    def put(
        self,
        call_sid: str,
        state: CallState,
        ttl: int = DEFAULT_TTL,
        *,
        context: FlowContext | None = None,
    ) -> None:
        sealed = self._seal(call_sid, state.to_bytes(context))
        self._store.save(_state_key(call_sid), sealed, ttl)

    def note_session_ended(self, call_sid: str) -> None:
        """The call's session ended outside the call: its next webhook reads the session again."""
        self._store.save_and_wake(_ended_key(call_sid), b"1", DEFAULT_TTL, _wake_key(call_sid))

    def note_answered(self, call_sid: str, attempt: int) -> None:
        """The payment job of `attempt` has finished: the hold's next poll reads its result."""
        self._store.save_and_wake(
            _answered_key(call_sid), str(attempt).encode(), DEFAULT_TTL, _wake_key(call_sid)
        )

    def wait_for_news(self, call_sid: str, seconds: float) -> bool | None:
        """Wait up to `seconds` for a note on this call (its job answered, its session ended):
        whether one came; None at once when none of this process's waiters is free."""
        if self._waiters is None or not self._waiters.acquire(blocking=False):
            return None
        try:
            return self._store.wait(_wake_key(call_sid), seconds)
        finally:
            self._waiters.release()

    def delete(self, call_sid: str) -> None:
        """The flow is over: its state goes. A note that its session ended stays until it expires,
        so the call's status callback knows the session needs no closing (`close`)."""
        self._store.delete(
            _state_key(call_sid),
            _card_key(call_sid),
            _hand_back_key(call_sid),
            _payment_key(call_sid),
            _answered_key(call_sid),
            _wake_key(call_sid),
        )

    def close(self, call_sid: str) -> ClosedCall:
        """The call is over: its state goes, but a card handed to its payment job stays for the
        job. Says what was parked for that job, if anything (the job, or its timing out, ends the
        session), and whether the call's session was noted as ended."""
        ended, parked = self._store.load_many(_ended_key(call_sid), _payment_key(call_sid))
        self._store.delete(
            _state_key(call_sid),
            _hand_back_key(call_sid),
            _ended_key(call_sid),
            _answered_key(call_sid),
            _wake_key(call_sid),
        )
        return ClosedCall(self._parked(call_sid, parked), session_ended=ended is not None)

    def put_hand_back(self, call_sid: str, hand_back: HandBack, ttl: int = CALL_TTL) -> None:
        self._store.save(_hand_back_key(call_sid), self._seal(call_sid, hand_back.to_bytes()), ttl)

    def hand_back(self, call_sid: str) -> HandBack | None:
        raw = self._open(call_sid, self._store.load(_hand_back_key(call_sid)))
        return None if raw is None else HandBack.from_bytes(raw)

    def put_card(self, call_sid: str, card: KeyedCard, ttl: int = CARD_TTL) -> None:
        payload = json.dumps(card.to_dict()).encode()
        self._store.save(_card_key(call_sid), self._seal(call_sid, payload), ttl)

    def park(self, call_sid: str, payment: ParkedPayment, card: KeyedCard) -> None:
        """Hand `card` to the job of `payment`; the record of it outlives the card by far."""
        self._store.save(_payment_key(call_sid), self._seal(call_sid, payment.to_bytes()), CALL_TTL)
        self.put_card(call_sid, card)

    def payment(self, call_sid: str) -> ParkedPayment | None:
        """The payment last handed to a job on this call (its card may be taken or gone since)."""
        return self._parked(call_sid, self._store.load(_payment_key(call_sid)))

    def _parked(self, call_sid: str, sealed: bytes | None) -> ParkedPayment | None:
        raw = self._open(call_sid, sealed)
        return None if raw is None else ParkedPayment.from_bytes(raw)

    def take_card(self, call_sid: str) -> KeyedCard | None:
        raw = self._open(call_sid, self._store.take(_card_key(call_sid)))
        return None if raw is None else KeyedCard.from_dict(json.loads(raw))

    def claim(self, key: str, ttl: int = DEFAULT_TTL) -> bool:
        return self._store.claim(f"{KEY_PREFIX}claim:{key}", ttl)

    def _seal(self, call_sid: str, payload: bytes) -> bytes:
        return self._sealer.seal(call_sid.encode() + b"\n" + payload)

    def _open(self, call_sid: str, sealed: bytes | None) -> bytes | None:
        if sealed is None:
            return None
        owner, _, payload = self._sealer.open(sealed).partition(b"\n")
        if owner != call_sid.encode():  # a valid ciphertext copied from another call's key
            raise DecryptionError("sealed value belongs to another call")
        return payload


# The process's Services as the call sees them: with this module's call state.
CallServices = Services[CallStates]


def _state_key(call_sid: str) -> str:
    return f"{KEY_PREFIX}state:{call_sid}"


def _card_key(call_sid: str) -> str:
    return f"{KEY_PREFIX}card:{call_sid}"


def _hand_back_key(call_sid: str) -> str:
    return f"{KEY_PREFIX}hand_back:{call_sid}"


def _payment_key(call_sid: str) -> str:
    return f"{KEY_PREFIX}payment:{call_sid}"


def _ended_key(call_sid: str) -> str:
    return f"{KEY_PREFIX}ended:{call_sid}"


def _answered_key(call_sid: str) -> str:
    return f"{KEY_PREFIX}answered:{call_sid}"


def _wake_key(call_sid: str) -> str:
    return f"{KEY_PREFIX}wake:{call_sid}"


def callstate_from_url(redis_url: str | None, secret: str, *, waiters: int = 0) -> CallStates:
    """Redis when ``REDIS_URL`` is set (several web processes share it), else in-process."""
    store: CallStateStore
    if redis_url:
        store = RedisCallStateStore(redis.Redis.from_url(redis_url))
    else:
        store = MemoryCallStateStore()
    return CallStates(store, secret, waiters=waiters)
