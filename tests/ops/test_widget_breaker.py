"""The widget's decline-rate breaker: a project whose widget charges are mostly declined has them
paused for a while, in every process, and its merchant is told once per pause (payments.breaker)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from sqlalchemy import select
from werkzeug.test import TestResponse

from api.frame import csrf_token
from payments.breaker import PAUSED_EVENT, PAUSED_MESSAGE
from payments.delivery import deliver_due
from payments.services import Services
from payments.store import WebhookEvent
from tests.conftest import TEST_SECRET_KEY, count_gateway_calls, free_port, tuned
from tests.ops.conftest import QueuedJobs, app_for
from tests.ops.test_webhooks import checking_receiver
from tests.widget.conftest import APPROVED, new_widget_session

DECLINING = ["4000000000000002", "4000000000009995", "4000000000000127", "4000000000000069"]
# Ten charges at least, more than half declined; the per-card velocity limit kept out of the way.
BREAKER = {"widget_breaker_min_attempts": 10, "card_failure_limit": 1000}
PAUSE = timedelta(minutes=15)  # the default


def charge(client: FlaskClient, services: Services, number: str, n: int, **session: str) -> int:
    """One charge from its own address (the per-address limits are not what is tested here)."""
    return charge_response(client, services, number, n, **session).status_code


def charge_response(
    client: FlaskClient, services: Services, number: str, n: int, **session: str
) -> TestResponse:
    session_id = new_widget_session(services, "acme", **session)
    return client.post(
        f"/v1/widget-sessions/{session_id}/charge",
        json={"card_number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        headers={"X-Paydial-CSRF": csrf_token(TEST_SECRET_KEY, session_id)},
        environ_base={"REMOTE_ADDR": f"10.0.{n // 250}.{n % 250}"},
    )


def declining(n: int) -> str:
    return DECLINING[n % len(DECLINING)]


def paused_until(client: FlaskClient, key: str) -> str | None:
    response = client.get("/v1/projects/acme", headers={"Authorization": key})
    assert response.status_code == 200
    until: str | None = response.get_json()["widget_charges_paused_until"]
    return until


def breaker_events(services: Services) -> list[WebhookEvent]:
    with services.db.transaction() as tx:
        return list(tx.scalars(select(WebhookEvent).where(WebhookEvent.type == PAUSED_EVENT)))


def pause_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("widget charges paused")]


@pytest.fixture(params=["memory", "redis"])
def breaker_services(
    request: pytest.FixtureRequest, services: Services, queued: QueuedJobs
) -> Services:
    """The breaker's state in the process's memory, or in Redis."""
    if request.param == "memory":
        return tuned(services, **BREAKER)
    return tuned(services, redis_url=request.getfixturevalue("redis_url"), **BREAKER)


def test_the_breaker_trips_on_the_share_declined_and_refuses_before_the_gateway(
    breaker_services: Services,
    merchant: dict[str, str],
    make_project: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = breaker_services
    calls = count_gateway_calls(monkeypatch)
    client = app_for(services).test_client()
    # Four approvals, then declines: the tenth charge makes it 6 of 10 declined.
    cards = [APPROVED] * 4 + [declining(n) for n in range(6)]
    assert [charge(client, services, card, n) for n, card in enumerate(cards)] == [200] * 4 + [
        402
    ] * 6

    refused = charge_response(client, services, APPROVED, 10)
    assert refused.status_code == 429
    assert refused.get_json() == {
        "detail": PAUSED_MESSAGE,
        "error_code": "charges_paused",
        "resume_at": "2026-11-21T12:15:00Z",
    }
    assert refused.headers["Retry-After"] == str(int(PAUSE.total_seconds()))
    assert len(calls) == 10  # the refused charge never reached the gateway
    # The API reads the pause, for the key's mode only: test declines never pause live charges.
    assert paused_until(client, merchant["test"]) == "2026-11-21T12:15:00Z"
    assert paused_until(client, merchant["live"]) is None
    # Another project's widget is not paused.
    make_project("other")
    other = new_widget_session(services, "other")
    assert (
        client.post(
            f"/v1/widget-sessions/{other}/charge",
            json={"card_number": APPROVED, "exp_month": 12, "exp_year": 2030, "cvc": "123"},
            headers={"X-Paydial-CSRF": csrf_token(TEST_SECRET_KEY, other)},
        ).status_code
        == 200
    )


def test_many_approvals_with_a_few_declines_never_trip_it_and_half_is_not_more_than_half(
    breaker_services: Services, merchant: dict[str, str]
) -> None:
    services = breaker_services
    client = app_for(services).test_client()
    # Thirty charges, every third declined: a third declined.
    statuses = [
        charge(client, services, declining(n) if n % 3 == 0 else APPROVED, n) for n in range(30)
    ]
    assert statuses.count(402) == 10 and statuses.count(200) == 20
    # Ten declines more: 20 of 40, exactly half, is not more than half.
    statuses = [charge(client, services, declining(n), n) for n in range(30, 40)]
    assert statuses == [402] * 10
    assert paused_until(client, merchant["test"]) is None
    # One more: 21 of 41 declined trips it.
    assert charge(client, services, declining(40), 40) == 402
    assert charge(client, services, APPROVED, 41) == 429


def test_declines_that_slid_out_of_the_window_no_longer_count(
    breaker_services: Services, merchant: dict[str, str]
) -> None:
    services = breaker_services
    client = app_for(services).test_client()
    assert [charge(client, services, declining(n), n) for n in range(9)] == [402] * 9
    services.clock.advance(minutes=10, seconds=1)  # type: ignore[attr-defined]
    # Nine declines within the window would make this the tenth of ten; they are gone.
    assert charge(client, services, declining(9), 9) == 402
    assert charge(client, services, APPROVED, 10) == 200
    assert paused_until(client, merchant["test"]) is None


def test_charges_resume_after_the_pause_and_a_later_pause_is_announced_again(
    breaker_services: Services,
    merchant: dict[str, str],
    hook_secret: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    services = breaker_services
    client = app_for(services).test_client()
    with caplog.at_level(logging.WARNING):
        assert [charge(client, services, declining(n), n) for n in range(10)] == [402] * 10
        services.clock.advance(seconds=PAUSE.total_seconds() - 1)  # type: ignore[attr-defined]
        almost = charge_response(client, services, APPROVED, 10)
        assert almost.status_code == 429 and almost.headers["Retry-After"] == "1"
        services.clock.advance(seconds=1)  # type: ignore[attr-defined]
        assert paused_until(client, merchant["test"]) is None
        assert charge(client, services, APPROVED, 11) == 200
        # The window started afresh: one decline now is one of two, not the eleventh of twelve.
        assert charge(client, services, declining(12), 12) == 402
        assert charge(client, services, APPROVED, 13) == 200
        assert len(breaker_events(services)) == 1
        # Seven declines more make 8 of 10: a second pause, told once more.
        assert [charge(client, services, declining(n), n) for n in range(14, 21)] == [402] * 7
        assert charge(client, services, APPROVED, 21) == 429
    assert len(breaker_events(services)) == 2
    assert len(pause_warnings(caplog)) == 2


@pytest.mark.redis
def test_two_app_instances_on_one_redis_share_the_pause_and_the_merchant_is_told_once(
    services: Services,
    redis_url: str,
    merchant: dict[str, str],
    hook_secret: str,
    receiver: HTTPServer,
    queued: QueuedJobs,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = count_gateway_calls(monkeypatch)
    # Two web processes: their own Services, breaker and limiter each; only Redis in common.
    instances = [app_for(tuned(services, redis_url=redis_url, **BREAKER)) for _ in range(2)]
    sessions = [new_widget_session(services, "acme") for _ in range(40)]

    def attack(n: int) -> int:
        return (
            instances[n % 2]
            .test_client()
            .post(
                f"/v1/widget-sessions/{sessions[n]}/charge",
                json={"card_number": declining(n), "exp_month": 12, "exp_year": 2030, "cvc": "123"},
                headers={"X-Paydial-CSRF": csrf_token(TEST_SECRET_KEY, sessions[n])},
                environ_base={"REMOTE_ADDR": f"10.1.0.{n}"},
            )
            .status_code
        )

    with caplog.at_level(logging.WARNING), ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(attack, range(40)))
    assert set(statuses) == {402, 429}
    assert 10 <= statuses.count(402) == len(calls) < 40
    for n, client in enumerate(
        app.test_client() for app in instances
    ):  # paused in both processes, whichever tripped it
        assert charge(client, services, APPROVED, 100 + n) == 429
        assert paused_until(client, merchant["test"]) is not None

    [event] = breaker_events(services)
    assert queued.deliveries == [event.id]  # handed to the job runner at commit, once
    assert len(pause_warnings(caplog)) == 1
    accepted = checking_receiver(receiver, hook_secret, services.clock().timestamp())
    assert deliver_due(services) == 1
    assert len(accepted) == 1  # signed with the project's secret, verified by the receiver
    [body] = accepted
    window = body.pop("window")
    assert body == {
        "event_id": event.id,
        "event": "widget-charges-paused",
        "project": "acme",
        "environment": "test",
        "paused_at": "2026-11-21T12:00:00Z",
        "resume_at": "2026-11-21T12:15:00Z",
    }
    assert window["minutes"] == 10 and window["attempts"] >= 10
    assert window["declined"] == window["attempts"]
    assert "4000000000000002" not in json.dumps(body)
    assert deliver_due(services) == 0  # delivered: not sent again


def test_with_redis_unreachable_the_breaker_still_trips_in_each_process(
    services: Services, merchant: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    down = tuned(services, redis_url=f"redis://127.0.0.1:{free_port()}/0", **BREAKER)
    client = app_for(down).test_client()
    with caplog.at_level(logging.WARNING):
        assert [charge(client, down, declining(n), n) for n in range(10)] == [402] * 10
        assert charge(client, down, APPROVED, 10) == 429
    outage = [r for r in caplog.records if "widget breaker counts in this process" in r.message]
    assert len(outage) == 1
    assert len(pause_warnings(caplog)) == 1
