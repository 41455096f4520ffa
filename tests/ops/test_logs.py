"""Logs: card numbers masked whatever the logger, request and session ids on every line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer

from ivr.charge import run_payment_job
from payments import logs
from payments.attempts import pay
from payments.delivery import RETRY_WINDOW, deliver_due
from payments.services import PaymentJob, Services
from tests.ops.test_webhooks import APPROVED

PANS = ["4242424242424242", "4000 0566 5566 5556", "3782-822463-10005", "6011000990139424"]


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """A plain handler on the root logger, as a production deployment would have."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    logs.configure(json_logs=True)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize("logger", ["paydial", "twilio.http_client", "urllib3.connectionpool", ""])
def test_card_numbers_are_masked_in_any_loggers_lines(captured: io.StringIO, logger: str) -> None:
    log = logging.getLogger(logger)
    for pan in PANS:
        log.info("card %s exp 1230", pan)
        log.warning(f"inline {pan}#")
    try:
        raise ValueError(f"bad card {PANS[0]}")
    except ValueError:
        log.exception("failed for %s", PANS[1])
    text = captured.getvalue()
    for pan in PANS:
        assert pan not in text
        assert pan.replace(" ", "").replace("-", "") not in text
    assert text.count(logs.MASK) == 2 * len(PANS) + 2
    assert "exp 1230" in text


def test_numbers_that_are_not_card_numbers_are_left_alone(captured: io.StringIO) -> None:
    log = logging.getLogger("paydial.test")
    log.info("order 4242424242424241 at 1700000000 for +14155550100, code 123456")
    [entry] = lines(captured)
    assert entry["message"] == "order 4242424242424241 at 1700000000 for +14155550100, code 123456"


def test_a_card_number_run_together_with_its_expiry_is_still_masked() -> None:
    assert "4242424242424242" not in logs.redact("digits 42424242424242421230 end")
    spaced = logs.redact("digits 4242 4242 4242 4242 1230 end")
    assert "4242" not in spaced and logs.MASK in spaced


@pytest.mark.parametrize(
    "query",
    [
        "caller=4242+4242+4242+4242&x=1",
        "caller=4242%204242%204242%204242",
        "caller=4000%2D0566%2d5566%2D5556",
        "caller=378282%20246310005%201230",
    ],
)
def test_a_card_number_with_url_encoded_separators_is_masked(query: str) -> None:
    masked = logs.redact(f"GET /v1/sessions?{query} HTTP/1.1")
    assert masked.startswith("GET /v1/sessions?caller=" + logs.MASK), masked
    assert not any(digits in masked for digits in ("4242", "5556", "378282", "10005"))


def test_url_encoded_text_that_is_not_a_card_number_is_left_alone() -> None:
    text = "q=order%201234%205678%209012%203456&phone=%2B14155550100"
    assert logs.redact(text) == text


def test_every_line_of_a_request_carries_its_request_id_and_session_id(
    app: Flask, client: FlaskClient, captured: io.StringIO
) -> None:
    app.add_url_rule(
        "/probe/<session_id>",
        "probe",
        lambda session_id: (logging.getLogger("ivr.any").info("working"), "ok")[1],
    )
    response = client.get("/probe/sess-123", headers={"X-Request-Id": "req-abc"})
    assert response.headers["X-Request-Id"] == "req-abc"
    [entry] = [e for e in lines(captured) if e["message"] == "working"]
    assert (entry["request_id"], entry["session_id"]) == ("req-abc", "sess-123")
    client.get("/probe/other", headers={"X-Request-Id": "bad id with spaces"})
    second = [e for e in lines(captured) if e["message"] == "working"][-1]
    assert second["request_id"] not in (None, "req-abc", "bad id with spaces")
    assert second["session_id"] == "other"
    logging.getLogger("ivr.any").info("outside")
    outside = lines(captured)[-1]
    assert (outside["request_id"], outside["session_id"]) == (None, None)


def test_a_payment_job_logs_its_session_like_a_request_does(
    services: Services, captured: io.StringIO
) -> None:
    """Lines written off the request (a payment job in a worker) carry the session id."""
    run_payment_job(services, PaymentJob("sess-job", 1, "CA-no-card"))  # its card is gone
    [job_line] = [e for e in lines(captured) if "found no card" in str(e["message"])]
    assert job_line["session_id"] == "sess-job"
    logging.getLogger("payments.any").info("after the job")
    assert lines(captured)[-1]["session_id"] is None


def test_a_webhook_delivery_logs_its_session(
    services: Services,
    captured: io.StringIO,
    hook_secret: str,
    receiver: HTTPServer,
    new_session: Callable[..., str],
) -> None:
    """A merchant webhook sent off the request (the sweep here, a job at commit) names its
    session in its log lines, like the payment that wrote it."""
    receiver.expect_request("/hooks", method="POST").respond_with_data("down", status=500)
    session_id = new_session()
    pay(services, session_id, APPROVED)
    services.clock.advance(seconds=RETRY_WINDOW.total_seconds())  # type: ignore[attr-defined]

    assert deliver_due(services) == 1  # past its retry window, the first failure is its last

    [given_up] = [e for e in lines(captured) if "given up" in str(e["message"])]
    assert given_up["session_id"] == session_id


def test_an_id_whose_digits_pass_luhn_across_its_dashes_is_left_whole() -> None:
    # 26469-0934-403: twelve digits that pass Luhn, inside a project id (a random UUID)
    line = "session refused: project b0f26469-0934-403f-b1ce-24ea8f5fa610 has no live credentials"
    assert logs.redact(line) == line
    # a card number shaped like an id (digits only) is still masked
    shaped = logs.redact("id 42424242-4242-4242-4242-424242424242 end")
    assert "4242" not in shaped and logs.MASK in shaped


def test_a_job_id_that_holds_a_session_id_is_left_whole() -> None:
    # 161-4682-9483-851: fourteen digits that pass Luhn, inside a session id inside a job id
    line = "job pay-1f848018-f161-4682-9483-851f6302eafe-1 found no card"
    assert logs.redact(line) == line
    # digits joined to an id by a dash are still checked on their own
    joined = logs.redact("job pay-1f848018-f161-4682-9483-851f6302eafe-4242424242424242 end")
    assert "4242" not in joined and joined.endswith(f"eafe-{logs.MASK} end")
