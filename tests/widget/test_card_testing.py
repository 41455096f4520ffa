"""Card testing through the widget: limits per client address on charges and on declines, and per
project on charges, counted in Redis so every web process shares them. The project's decline-rate
breaker is tested in tests/ops/test_widget_breaker.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from api.frame import csrf_token
from payments.services import Services
from tests.conftest import TEST_SECRET_KEY, count_gateway_calls, tuned
from tests.ops.conftest import app_for
from tests.widget.conftest import APPROVED

# The simulator declines these, each for its own reason; a card-testing run rotates through cards
# so that no one card reaches the per-card velocity limit first.
DECLINING = ["4000000000000002", "4000000000009995", "4000000000000127", "4000000000000069"]
ATTACKER = "198.51.100.7"


def charge(client: FlaskClient, session_id: str, number: str, address: str) -> TestResponse:
    return client.post(
        f"/v1/widget-sessions/{session_id}/charge",
        json={"card_number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        headers={"X-Paydial-CSRF": csrf_token(TEST_SECRET_KEY, session_id)},
        environ_base={"REMOTE_ADDR": address},
    )


@pytest.mark.redis
def test_declines_from_one_address_are_stopped_within_ten_across_sessions_and_processes(
    services: Services,
    redis_url: str,
    make_widget_session: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = count_gateway_calls(monkeypatch)
    shared = tuned(services, redis_url=redis_url)
    processes = [app_for(shared).test_client() for _ in range(2)]
    answers = [
        charge(processes[n % 2], make_widget_session(), DECLINING[n % 4], ATTACKER)
        for n in range(40)
    ]
    statuses = [a.status_code for a in answers]
    first_refusal = statuses.index(429)
    assert first_refusal <= 10 and set(statuses[:first_refusal]) == {402}
    assert set(statuses[first_refusal:]) == {429}
    assert len(calls) == first_refusal <= 10  # nothing after the limit reached the gateway
    refused = answers[first_refusal]
    assert refused.get_json() == {
        "detail": "Too many declined payments from this network. Please try again later."
    }
    assert 0 < int(refused.headers["Retry-After"]) <= 3600
    # Another address is not held back by this one.
    assert charge(processes[0], make_widget_session(), APPROVED, "203.0.113.9").status_code == 200


def test_charges_from_one_address_are_limited_even_when_they_succeed(
    services: Services, make_widget_session: Callable[..., str]
) -> None:
    client = app_for(tuned(services, widget_ip_charge_limit="3/hour")).test_client()
    statuses = [
        charge(client, make_widget_session(), APPROVED, ATTACKER).status_code for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    assert charge(client, make_widget_session(), APPROVED, "203.0.113.9").status_code == 200


def test_the_project_charge_limit_counts_only_charges_that_reached_the_gateway(
    services: Services, make_widget_session: Callable[..., str]
) -> None:
    client = app_for(tuned(services, widget_project_charge_limit="2/hour")).test_client()
    session_id = make_widget_session()
    forged = client.post(
        f"/v1/widget-sessions/{session_id}/charge",
        json={"card_number": APPROVED, "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        headers={"X-Paydial-CSRF": "forged"},
    )
    assert forged.status_code == 403
    statuses = [
        charge(client, make_widget_session(), APPROVED, f"192.0.2.{n}").status_code
        for n in range(3)
    ]
    assert statuses == [200, 200, 429]


@pytest.mark.parametrize(("proxies", "separate"), [(1, True), (0, False)])
def test_behind_trusted_proxies_each_forwarded_client_has_its_own_budget(
    services: Services, make_widget_session: Callable[..., str], proxies: int, separate: bool
) -> None:
    """X-Forwarded-For counts only when the operator says a proxy sets it; else it is forgeable."""
    client = app_for(
        tuned(services, trusted_proxies=proxies, widget_ip_charge_limit="1/hour")
    ).test_client()

    def through_proxy(forwarded_for: str) -> int:
        session_id = make_widget_session()
        return client.post(
            f"/v1/widget-sessions/{session_id}/charge",
            json={"card_number": APPROVED, "exp_month": 12, "exp_year": 2030, "cvc": "123"},
            headers={
                "X-Paydial-CSRF": csrf_token(TEST_SECRET_KEY, session_id),
                "X-Forwarded-For": forwarded_for,
            },
            environ_base={"REMOTE_ADDR": "10.0.0.1"},  # the proxy
        ).status_code

    assert through_proxy("198.51.100.1") == 200
    assert through_proxy("198.51.100.2") == (200 if separate else 429)
