from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis

from ivr.callstate import (
    CallStates,
    CallStateStore,
    HandBack,
    MemoryCallStateStore,
    RedisCallStateStore,
    callstate_from_url,
)
from ivr.flow import CallState, KeyedCard, Step
from ivr.transfer import Transfer
from payments.crypto import DecryptionError
from tests.ivr.conftest import Watched

SECRET = "callstate-test-secret"
CARD = KeyedCard(number="4242424242424242", expiry="1230", security_code="987", postal_code="94107")
STATE = CallState(step=Step.CONFIRM, session_id="sess_1", tries=1, card=CARD)


@dataclass
class Backend:
    store: CallStateStore
    states: CallStates
    pass_time: Callable[[float], None]
    raw_keys: Callable[[], list[str]]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        clock = FakeClock()
        memory = MemoryCallStateStore(clock=clock)
        yield Backend(
            memory, CallStates(memory, SECRET), clock.advance, lambda: list(memory._items)
        )
        return
    url: str = request.getfixturevalue("redis_url")
    client = redis.Redis.from_url(url)
    store = RedisCallStateStore(client)
    yield Backend(
        store,
        CallStates(store, SECRET),
        time.sleep,  # Redis keeps its own time; TTLs in these tests are one second
        lambda: [k if isinstance(k, str) else k.decode() for k in client.keys("*")],
    )
    client.close()


def test_state_roundtrips_with_the_card(backend: Backend) -> None:
    backend.states.put("CA1", STATE)
    assert backend.states.get("CA1") == STATE
    assert backend.states.get("CA2") is None


def test_state_expires_after_its_ttl(backend: Backend) -> None:
    backend.states.put("CA1", STATE, ttl=1)
    backend.pass_time(1.2)
    assert backend.states.get("CA1") is None


def test_delete_removes_the_state_and_the_card_waiting_for_the_gateway(backend: Backend) -> None:
    backend.states.put("CA1", STATE)
    backend.states.put_card("CA1", CARD)
    backend.states.delete("CA1")
    assert backend.states.get("CA1") is None
    assert backend.states.take_card("CA1") is None
    assert backend.raw_keys() == []


@pytest.mark.parametrize(
    "hand_back",
    [
        HandBack("es-US", Transfer(number="+14155550199")),
        HandBack("en-US", Transfer(sip_uri="sip:agent@example.com?X-Paydial-Session=s")),
        HandBack("en-US"),
    ],
)
def test_the_hand_back_is_kept_sealed_until_the_call_is_deleted(
    backend: Backend, hand_back: HandBack
) -> None:
    backend.states.put_hand_back("CA1", hand_back)
    assert backend.states.hand_back("CA1") == hand_back
    assert backend.states.hand_back("CA2") is None
    assert all("agent" not in key and "+1415" not in key for key in backend.raw_keys())
    backend.states.delete("CA1")
    assert backend.states.hand_back("CA1") is None


def test_the_gateway_job_takes_the_card_exactly_once(backend: Backend) -> None:
    backend.states.put_card("CA1", CARD)
    assert backend.states.take_card("CA1") == CARD
    assert backend.states.take_card("CA1") is None


def test_stored_values_are_ciphertext_under_namespaced_keys(backend: Backend) -> None:
    backend.states.put("CA1", STATE)
    backend.states.put_card("CA1", CARD)
    backend.states.claim("sess_1:1")
    keys = backend.raw_keys()
    assert sorted(keys) == [
        "paydial:call:card:CA1",
        "paydial:call:claim:sess_1:1",
        "paydial:call:state:CA1",
    ]
    for key in ("paydial:call:card:CA1", "paydial:call:state:CA1"):
        raw = backend.store.load(key)
        assert raw is not None
        for secret in (b"4242424242424242", b"424242", b"1230", b"987", b"94107", b"sess_1"):
            assert secret not in raw


def test_a_tampered_value_is_rejected(backend: Backend) -> None:
    backend.states.put("CA1", STATE)
    key = "paydial:call:state:CA1"
    raw = backend.store.load(key)
    assert raw is not None
    backend.store.save(key, raw[:-1] + bytes([raw[-1] ^ 1]), 60)
    with pytest.raises(DecryptionError):
        backend.states.get("CA1")


def test_a_value_copied_to_another_calls_key_is_rejected(backend: Backend) -> None:
    backend.states.put("CA1", STATE)
    raw = backend.store.load("paydial:call:state:CA1")
    assert raw is not None
    backend.store.save("paydial:call:state:CA2", raw, 60)
    with pytest.raises(DecryptionError, match="another call"):
        backend.states.get("CA2")


def test_a_value_sealed_with_another_secret_is_rejected(backend: Backend) -> None:
    CallStates(backend.store, "some-other-secret").put("CA1", STATE)
    with pytest.raises(DecryptionError):
        backend.states.get("CA1")


def test_claim_succeeds_once_until_it_expires(backend: Backend) -> None:
    assert backend.states.claim("sess_1:1", ttl=1)
    assert not backend.states.claim("sess_1:1", ttl=1)
    assert backend.states.claim("sess_1:2", ttl=1)
    backend.pass_time(1.2)
    assert backend.states.claim("sess_1:1", ttl=1)


def test_concurrent_claims_let_exactly_one_through(backend: Backend) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(16)

    def contend() -> None:
        barrier.wait()
        results.append(backend.states.claim("sess_1:1"))

    threads = [threading.Thread(target=contend) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 15 + [True]


def test_without_a_redis_url_the_state_stays_in_this_process() -> None:
    first = callstate_from_url(None, SECRET)
    first.put("CA1", STATE)
    assert first.get("CA1") == STATE
    assert callstate_from_url(None, SECRET).get("CA1") is None
    assert repr(first) == "CallStates(MemoryCallStateStore)"


@pytest.mark.redis
def test_with_a_redis_url_every_process_sees_the_same_state(redis_url: str) -> None:
    callstate_from_url(redis_url, SECRET).put("CA1", STATE)
    assert callstate_from_url(redis_url, SECRET).get("CA1") == STATE


def test_a_hold_waits_for_its_own_calls_news_and_takes_each_note_once(backend: Backend) -> None:
    calls = CallStates(backend.store, SECRET, waiters=1)
    calls.note_answered("CA1", 1)
    assert calls.wait_for_news("CA2", 0.05) is False  # another call's note wakes no one here
    assert calls.wait_for_news("CA1", 60) is True  # a note left before the wait is not missed
    assert calls.wait_for_news("CA1", 0.05) is False  # nor is it taken twice
    waiting = threading.Thread(target=calls.note_session_ended, args=("CA1",))
    waiting.start()
    assert calls.wait_for_news("CA1", 60) is True
    waiting.join()


def test_a_process_lets_only_its_waiters_wait_and_none_by_default(backend: Backend) -> None:
    assert CallStates(backend.store, SECRET).wait_for_news("CA1", 60) is None
    store = Watched(backend.store)
    calls = CallStates(store, SECRET, waiters=1)
    outcome: list[bool | None] = []
    first = threading.Thread(target=lambda: outcome.append(calls.wait_for_news("CA1", 60)))
    first.start()
    assert store.waiting.wait(60)
    assert calls.wait_for_news("CA2", 60) is None  # its one waiter is taken: no wait at all
    calls.note_answered("CA1", 1)
    first.join(60)
    assert outcome == [True]
    assert calls.wait_for_news("CA2", 0.05) is False  # and free again


def test_a_wait_with_next_to_no_time_left_still_ends(backend: Backend) -> None:
    """A poll's last instant of waiting: BLPOP's 0 means "block for good", and a timeout this
    small must not turn into it."""
    calls = CallStates(backend.store, SECRET, waiters=1)
    outcome: list[bool | None] = []
    waiting = threading.Thread(
        target=lambda: outcome.append(calls.wait_for_news("CA1", 1e-6)), daemon=True
    )
    waiting.start()
    waiting.join(60)
    assert outcome == [False]
