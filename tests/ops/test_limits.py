"""Rate limits per API key per endpoint: 429 JSON with Retry-After, the same in every process."""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient
from limits import parse
from pydantic import ValidationError
from twilio.request_validator import RequestValidator

from api.limits import Counts
from payments.services import Services
from payments.settings import Settings
from tests.conftest import PUBLIC_URL, TEST_TWILIO_TOKEN, free_port, service_missing, tuned
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


def test_twilio_webhooks_are_not_counted_even_with_a_key(
    services: Services, merchant: dict[str, str]
) -> None:
    """Twilio's routes are skipped before anything is counted, whatever the request carries."""
    client = app_for(tuned(services, rate_limit_test="1/hour")).test_client()
    form = {"CallSid": "CA" + "0" * 32, "CallStatus": "in-progress"}
    signature = RequestValidator(TEST_TWILIO_TOKEN).compute_signature(
        f"{PUBLIC_URL}/twilio/status", form
    )
    headers = {"X-Twilio-Signature": signature, "Authorization": merchant["test"]}

    webhooks = [client.post("/twilio/status", data=form, headers=headers) for _ in range(3)]
    keyed = [
        client.get(f"/v1/sessions/{uuid.uuid4()}", headers={"Authorization": merchant["test"]})
        for _ in range(2)
    ]

    assert [r.status_code for r in webhooks] == [200, 200, 200]
    assert [r.status_code for r in keyed] == [404, 429]


def test_a_refusal_whose_window_the_storage_cannot_tell_says_the_whole_window() -> None:
    """Redis gone between the count and the answer: the refusal still says when to come back."""
    counts = Counts(f"redis://127.0.0.1:{free_port()}/0")
    assert counts.seconds_to_reset(parse("3/hour"), "key", "scope") == 3600
    counts.close()


class OwnRedis:
    """A Redis server of the test's own, which it can stop and start again on the same port."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.command = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        self.command += ["--save", "", "--appendonly", "no", "--dir", str(directory)]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        while True:  # until it answers: no deadline, so a busy machine only waits longer
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert self.process.poll() is None, "redis-server exited"
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        service_missing("redis-server is not installed")
    server = OwnRedis(binary, tmp_path)
    server.start()
    yield server
    server.stop()


def test_counts_move_to_memory_while_redis_is_down_and_back_once_it_answers(
    own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    counts = Counts(own_redis.url, clock=lambda: now[0])
    once = parse("1/hour")
    assert (counts.hit(once, "a"), counts.hit(once, "a")) == (True, False)  # a's window, in Redis

    caplog.set_level(logging.INFO, logger="api.limits")
    own_redis.stop()
    during = [counts.hit(once, "b"), counts.hit(once, "b"), counts.hit(once, "a")]
    own_redis.start()  # a fresh server: the counts it held are gone
    before_the_ping = counts.hit(once, "b")  # answering again, but not pinged yet: memory
    now[0] += 1.5  # past the first one-second wait
    after_the_ping = counts.hit(once, "b")
    another_process = Counts(own_redis.url)
    seen_there = another_process.hit(once, "b")
    for process in (counts, another_process):
        process.close()

    assert during == [True, False, True]  # counted in memory, where a's window is empty
    assert [r.getMessage() for r in caplog.records if r.name == "api.limits"] == [
        "rate limits counted in this process's memory: Redis did not answer (ConnectionError)",
        "rate limits counted in Redis again",
    ]
    assert before_the_ping is False  # b's window in memory is full
    assert after_the_ping is True  # counted in Redis, where b's window was empty
    assert seen_there is False  # and seen there by every process


@pytest.mark.parametrize("variable", ["PAYDIAL_RATE_LIMIT_LIVE", "PAYDIAL_WIDGET_IP_CHARGE_LIMIT"])
def test_a_limit_the_notation_cannot_read_is_a_settings_error_naming_it(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "100 a minute")
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert [error["loc"] for error in refused.value.errors()] == [(variable,)]
    assert "couldn't parse rate limit string '100 a minute'" in str(refused.value)
