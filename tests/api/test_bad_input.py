"""Bad input gets a clear answer in the seeds' shape, never a 500."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient


@pytest.mark.parametrize("path", ["/v1/sessions", "/v1/widget-sessions"])
@pytest.mark.parametrize(
    ("data", "content_type", "kind"),
    [
        (b'{"project": "acme",', "application/json", "json_invalid"),
        (b"not json at all", "application/json", "json_invalid"),
        (b"", "application/json", "json_invalid"),
        (b"\xff\xfe\x00", "application/json", "json_invalid"),
        (b"[1, 2]", "application/json", "model_type"),
        (b'"a string"', "application/json", "model_type"),
        (b"project=acme", "application/x-www-form-urlencoded", "content_type"),
        (b'{"project": "acme"}', "text/plain", "content_type"),
        (b'{"project": "acme"}', None, "content_type"),
    ],
)
def test_malformed_bodies_are_422_with_a_detail_list(
    client: FlaskClient,
    merchant: dict[str, str],
    path: str,
    data: bytes,
    content_type: str | None,
    kind: str,
) -> None:
    headers = {"Authorization": merchant["test"]}
    if content_type:
        headers["Content-Type"] = content_type
    response = client.post(path, data=data, headers=headers)
    assert response.status_code == 422
    detail = response.json["detail"]
    assert detail[0]["type"] == kind
    assert detail[0]["loc"][0] == "body"
    assert all(set(item) == {"loc", "msg", "type"} for item in detail)


def test_non_finite_numbers_are_rejected(client: FlaskClient, merchant: dict[str, str]) -> None:
    for literal in (b"NaN", b"Infinity", b"1e400"):
        body = (
            b'{"project":"acme","caller":"+14155552671","mode":"charge","gateway":"stripe",'
            b'"amount":' + literal + b"}"
        )
        response = client.post(
            "/v1/sessions",
            data=body,
            headers={"Authorization": merchant["test"], "Content-Type": "application/json"},
        )
        assert response.status_code == 422, literal


def test_an_oversized_body_is_refused_as_json(
    client: FlaskClient, merchant: dict[str, str]
) -> None:
    response = client.post(
        "/v1/sessions",
        data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
        headers={"Authorization": merchant["test"], "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert "detail" in response.json


def test_unknown_routes_and_methods_answer_in_json(client: FlaskClient) -> None:
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404 and "detail" in missing.json
    wrong = client.delete("/v1/sessions")
    assert wrong.status_code == 405 and "detail" in wrong.json


def test_the_errors_never_echo_the_submitted_values(
    client: FlaskClient, merchant: dict[str, str]
) -> None:
    response = client.post(
        "/v1/sessions",
        json={
            "project": "acme",
            "caller": "4242424242424242",
            "amount": "x4242424242424242",
            "mode": "charge",
            "gateway": "stripe",
        },
        headers={"Authorization": merchant["test"]},
    )
    assert response.status_code == 422
    assert b"4242424242424242" not in response.data
