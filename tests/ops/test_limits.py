"""Rate limits per API key per endpoint: 429 JSON with Retry-After, the same in every process."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_limiter import Limiter, RequestLimit
from limits import parse
from twilio.request_validator import RequestValidator

from api.limits import LIMITER_EXTENSION, _seconds_to_reset
from payments.services import Services
from tests.conftest import PUBLIC_URL, TEST_TWILIO_TOKEN, free_port, tuned
from tests.ops.conftest import app_for


def test_every_process_sharing_redis_enforces_one_budget_with_the_same_retry_after(
    services: Services, redis_url: str, new_session: Callable[..., str], merchant: dict[str, str]
) -> None:
    session_id = new_session()
    shared = tuned(services, redis_url=redis_url, rate_limit_test="3/hour")
    first, second = app_for(shared).test_client(), app_for(shared).test_client()
    auth = {"Authorization": merchant["test"]}
    path = f"/v1/sessions/{session_id}"

    answers = [c.get(path, headers=auth) for c in (first, second, first, second, first)]

    assert [r.status_code for r in answers] == [200, 200, 200, 429, 429]
    assert answers[3].get_json() == {"detail": answers[3].get_json()["detail"]}
    assert "3 per 1 hour" in answers[3].get_json()["detail"]
    waits = [int(r.headers["Retry-After"]) for r in answers[3:]]
    assert 0 < waits[0] <= 3600 and abs(waits[0] - waits[1]) <= 1
    # Per endpoint and per key: other routes and other keys have budgets of their own.
    assert (
        first.get(f"/v1/webhook-deliveries?session_id={session_id}", headers=auth).status_code
        == 200
    )
    assert second.get(path, headers={"Authorization": merchant["live"]}).status_code == 404


def test_live_keys_get_the_live_limit(
    services: Services, client: FlaskClient, merchant: dict[str, str]
) -> None:
    app = app_for(tuned(services, rate_limit_live="2/hour", rate_limit_test="50/hour"))
    limited = app.test_client()
    live, test = {"Authorization": merchant["live"]}, {"Authorization": merchant["test"]}
    absent = f"/v1/sessions/{uuid.uuid4()}"  # well formed, so an unknown id is a 404
    assert [limited.get(absent, headers=live).status_code for _ in range(3)] == [404, 404, 429]
    assert limited.get(absent, headers=test).status_code == 404


def test_requests_without_a_key_are_not_counted(services: Services) -> None:
    app = app_for(tuned(services, rate_limit_test="1/hour"))
    client = app.test_client()
    assert [client.get("/v1/sessions/x").status_code for _ in range(3)] == [401, 401, 401]
    assert client.get("/health").status_code == 200


def test_with_redis_unreachable_the_limits_still_hold_in_each_process(
    services: Services, new_session: Callable[..., str], merchant: dict[str, str]
) -> None:
    session_id = new_session()
    down = f"redis://127.0.0.1:{free_port()}/0"
    client = app_for(tuned(services, redis_url=down, rate_limit_test="2/hour")).test_client()
    auth = {"Authorization": merchant["test"]}

    answers = [client.get(f"/v1/sessions/{session_id}", headers=auth) for _ in range(4)]

    assert [r.status_code for r in answers] == [200, 200, 429, 429]
    assert answers[2].get_json() == {"detail": "2 per 1 hour"}
    assert all(0 < int(r.headers["Retry-After"]) <= 3600 for r in answers[2:])


def test_twilio_webhooks_are_not_looked_at_by_the_limiter(
    services: Services, merchant: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = app_for(services)
    manager = app.extensions[LIMITER_EXTENSION].limit_manager
    resolved: list[str | None] = []
    scoped: list[str | None] = []
    resolve, scope = manager.resolve_limits, manager.exemption_scope

    def spied(app: object, endpoint: str | None, *args: object, **kwargs: object) -> object:
        resolved.append(endpoint)
        return resolve(app, endpoint, *args, **kwargs)

    def spied_scope(app: object, endpoint: str | None, *args: object) -> object:
        scoped.append(endpoint)
        return scope(app, endpoint, *args)

    monkeypatch.setattr(manager, "resolve_limits", spied)
    monkeypatch.setattr(manager, "exemption_scope", spied_scope)
    client = app.test_client()
    form = {"CallSid": "CA" + "0" * 32, "CallStatus": "in-progress"}
    signature = RequestValidator(TEST_TWILIO_TOKEN).compute_signature(
        f"{PUBLIC_URL}/twilio/status", form
    )

    webhook = client.post("/twilio/status", data=form, headers={"X-Twilio-Signature": signature})
    keyed = client.get(f"/v1/sessions/{uuid.uuid4()}", headers={"Authorization": merchant["test"]})

    assert (webhook.status_code, keyed.status_code) == (200, 404)
    assert resolved == ["sessions.get_session"]
    assert set(scoped) == {"sessions.get_session"}


def test_a_refusal_whose_window_the_storage_cannot_tell_says_the_whole_window() -> None:
    """Redis gone between the count and the answer: the refusal still says when to come back."""
    app = Flask(__name__)
    limiter = Limiter(
        lambda: "key",
        app=app,
        storage_uri=f"redis://127.0.0.1:{free_port()}/0",
        storage_options={"socket_connect_timeout": 1, "socket_timeout": 1},
    )
    refused = RequestLimit(limiter, parse("3/hour"), ["key", "scope"], True, False)
    assert _seconds_to_reset(refused) == 3600
