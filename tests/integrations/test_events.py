"""GET /v1/sessions/{id}/events: status changes as Server-Sent Events, over a real socket."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient

from tests.integrations.conftest import VOICE
from tests.leakscan import LeakScan


def sse_events(response: requests.Response) -> Iterator[dict[str, Any]]:
    """Parse an event stream (https://html.spec.whatwg.org/multipage/server-sent-events.html)."""
    event: dict[str, Any] = {}
    for line in response.iter_lines(decode_unicode=True):
        if line == "":
            if "data" in event:
                yield event
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")


class Listener:
    """An agent waiting on a session's event stream; what the server sends waits in the socket
    until read, so the test can run the call in between."""

    def __init__(self, url: str, authorization: str, leak_scan: LeakScan, where: str) -> None:
        self.response = requests.get(
            url, headers={"Authorization": authorization}, stream=True, timeout=60
        )
        self._events = sse_events(self.response)
        self._scan = (leak_scan, where)

    def next(self) -> dict[str, Any] | None:
        """The next event, or None once the server has ended the stream."""
        event = next(self._events, None)
        if event is not None:
            self._scan[0].check("sse event", self._scan[1], json.dumps(event))
        return event

    def close(self) -> None:
        self.response.close()


@pytest.fixture
def listen(
    server_url: str, merchant: dict[str, str], leak_scan: LeakScan, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Listener]]:
    listeners: list[Listener] = []

    def open_stream(session_id: str, last_event_id: str | None = None) -> Listener:
        url = f"{server_url}/v1/sessions/{session_id}/events"
        if last_event_id is not None:
            url += f"?last_event_id={last_event_id}"
        listener = Listener(url, merchant["test"], leak_scan, request.node.nodeid)
        listeners.append(listener)
        return listener

    yield open_stream
    for listener in listeners:
        listener.close()


def create(client: FlaskClient, merchant: dict[str, str]) -> dict[str, Any]:
    answer = client.post("/v1/sessions", json=VOICE, headers={"Authorization": merchant["test"]})
    assert answer.status_code == 201
    created: dict[str, Any] = answer.get_json()
    return created


def test_an_agent_sees_collecting_then_payment_success_as_they_commit_and_the_stream_ends(
    client: FlaskClient,
    merchant: dict[str, str],
    listen: Callable[..., Listener],
    pay_by_phone: Callable[..., Any],
) -> None:
    created = create(client, merchant)
    listener = listen(created["session_id"])
    assert listener.response.headers["Content-Type"].startswith("text/event-stream")
    first = listener.next()
    assert first is not None and json.loads(first["data"])["status"] == "pending"

    assert pay_by_phone(created["sip_uri"]).succeeded

    later = [listener.next(), listener.next()]
    statuses = [json.loads(event["data"])["status"] for event in later if event]
    assert statuses == ["collecting", "payment-success"]
    assert all(event and event["event"] == "status" for event in later)
    ids = [int(e["id"]) for e in [first, *later] if e]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert json.loads(later[1]["data"])["is_terminal"] is True  # type: ignore[index]
    assert listener.next() is None  # the stream ends at the terminal state


def test_a_dropped_connection_resumes_after_last_event_id_without_missing_an_event(
    client: FlaskClient,
    merchant: dict[str, str],
    listen: Callable[..., Listener],
    pay_by_phone: Callable[..., Any],
) -> None:
    created = create(client, merchant)
    listener = listen(created["session_id"])
    first = listener.next()
    assert first is not None
    listener.close()  # the connection drops; the call goes on without a listener

    assert pay_by_phone(created["sip_uri"]).succeeded

    resumed = listen(created["session_id"], last_event_id=first["id"])
    events = [resumed.next(), resumed.next(), resumed.next()]
    assert [json.loads(e["data"])["status"] for e in events if e] == [
        "collecting",
        "payment-success",
    ]
    assert events[2] is None
    replay = listen(created["session_id"], last_event_id=events[1]["id"])  # type: ignore[index]
    assert replay.next() is None  # nothing after the terminal event


def test_events_are_authenticated_and_isolated_like_the_api(
    client: FlaskClient,
    merchant: dict[str, str],
    make_project: Callable[..., str],
    make_key: Callable[..., str],
) -> None:
    created = create(client, merchant)
    path = f"/v1/sessions/{created['session_id']}/events"
    assert client.get(path).status_code == 401
    make_project("rival", "Rival LLC")
    assert (
        client.get(path, headers={"Authorization": f"Bearer {make_key('rival')}"}).status_code
        == 404
    )
    assert client.get(path, headers={"Authorization": merchant["live"]}).status_code == 404
    bad = client.get(path, headers={"Authorization": merchant["test"], "Last-Event-ID": "soon"})
    assert bad.status_code == 422
    assert bad.get_json()["detail"][0]["loc"] == ["header", "Last-Event-ID"]
