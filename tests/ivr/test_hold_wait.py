"""A holding caller's poll waits in the web process for the payment job's news.

Twilio pauses only whole seconds between hold polls, so a poll waits (up to
`hold_wait_seconds`) for the job's answer or the session's end and answers as soon as either
comes; the poll after a wait asks for no pause. Each test runs with the job on a thread beside
the call, call state in process memory and in Redis, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from ivr.callstate import CallStateStore
from ivr.phone import HttpReply, ScriptedKeypad
from tests.ivr.conftest import (
    APPROVED,
    BESIDE_THE_CALL,
    CVV,
    DECLINED,
    EXPIRY,
    Watched,
    gateway_holding,
)
from tests.ivr.test_call_e2e import _enter_until_confirm
from tests.ivr.twilio_client import flask_transport, phone_over, twiml

pytestmark = pytest.mark.parametrize("call_backend", BESIDE_THE_CALL, indirect=True)

WAIT = 10  # the longest allowed, far longer than a job takes: only its note ends a wait early


@pytest.fixture
def watched() -> list[Watched]:
    return []


@pytest.fixture
def watch_store(watched: list[Watched]) -> Callable[[CallStateStore], CallStateStore]:
    """The call state's store, noting when a poll begins to wait on it."""

    def watch(store: CallStateStore) -> CallStateStore:
        watched.append(Watched(store))
        return watched[-1]

    return watch


@pytest.fixture
def hold_wait() -> float:
    return WAIT


@pytest.fixture
def call_settings(hold_wait: float) -> dict[str, Any]:
    return {"hold_wait_seconds": hold_wait}


class Recording:
    """A transport to the app that keeps each webhook's path and TwiML."""

    def __init__(self, send: Callable[..., HttpReply]) -> None:
        self.sent: list[tuple[str, str]] = []
        self._send = send

    def __call__(self, path: str, form: Mapping[str, str], headers: Mapping[str, str]) -> HttpReply:
        reply = self._send(path, form, headers)
        self.sent.append((path, reply.body))
        return reply

    def replies(self, route: str) -> list[str]:
        return [body for path, body in self.sent if path.startswith(route)]


def pauses(body: str) -> list[str]:
    return [pause.get("length", "") for pause in twiml(body).iter("Pause")]


@pytest.mark.parametrize(
    ("card", "answer"),
    [
        (APPROVED, "Your payment was approved."),  # the session's end is the news
        (DECLINED, "The card was declined by the bank."),  # the job's answer is (tries remain)
    ],
)
def test_the_caller_hears_the_answer_as_the_job_records_it_not_at_a_later_poll(
    client: Any,
    new_session: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    watched: list[Watched],
    card: str,
    answer: str,
) -> None:
    """The gateway answers only once the first hold poll has begun to wait: with a wait far
    longer than the job takes, only the job's news can end that poll with the answer."""
    release = gateway_holding(monkeypatch, lambda: None)
    [store] = watched
    letting_go = threading.Thread(target=lambda: store.waiting.wait(60) and release.set())
    letting_go.start()
    recording = Recording(flask_transport(client))
    created = new_session()
    keys = ScriptedKeypad([card + "#", EXPIRY, CVV, "1"])  # then no other card: hang up

    result = phone_over(recording, to=created["sip_uri"]).call(keys)

    release.set()
    letting_go.join(60)
    assert answer in result.heard
    [poll] = recording.replies("/twilio/result")
    assert twiml(poll).find("Redirect") is None  # the answer itself, not another hold
    [confirmed] = [body for body in recording.replies("/twilio/gather") if "<Redirect" in body]
    assert pauses(confirmed) == ["1"]  # the confirmation does not wait: Twilio pauses first


@pytest.mark.parametrize(("hold_wait", "pause"), [(0.05, []), (0, ["1"])])
def test_a_poll_that_waited_in_vain_asks_for_no_pause_and_without_waiting_twilio_pauses(
    client: Any,
    new_session: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    pause: list[str],
) -> None:
    release = gateway_holding(monkeypatch, lambda: None)  # the charge waits until the end
    call = phone_over(flask_transport(client), to=new_session()["sip_uri"])
    try:
        confirm_url, confirm = _enter_until_confirm(call, {})  # keys the approved test card
        held = call.post(confirm_url, confirm).body
        polls = []
        for _ in range(3):
            redirect = twiml(held).find("Redirect")
            assert redirect is not None
            held = call.post(redirect.text or "").body
            polls.append(held)
    finally:
        release.set()
    assert all(twiml(poll).find("Redirect") is not None for poll in polls)  # still holding
    assert [pauses(poll) for poll in polls] == [pause] * 3
