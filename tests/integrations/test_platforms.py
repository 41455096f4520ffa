"""Retell custom functions and Vapi tool calls, with requests shaped as the platforms send them."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from api import create_app
from payments.integrations import RETELL_KEY_PURPOSE, issue_integration_token, set_retell_key
from payments.model import Environment
from payments.services import Services
from tests.conftest import tuned
from tests.integrations.test_mcp import session_count
from tests.leakscan import LeakScan

RETELL_API_KEY = "key_retell_0123456789abcdef"

# Retell's custom-function request: {"name", "call", "args"}, X-Retell-Signature
# (https://docs.retellai.com/build/single-multi-prompt/custom-function); the call object as the
# Get Call API returns it, cut to the fields that matter here (https://docs.retellai.com/api-references/get-call).
RETELL_REQUEST: dict[str, Any] = {
    "name": "collect_payment",
    "call": {
        "call_type": "phone_call",
        "call_id": "Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6",
        "agent_id": "oBeDLoLOeuAbiuaMFXRtDOLriTJ5tSxD",
        "call_status": "ongoing",
        "from_number": "+14155550100",
        "to_number": "+14155550199",
        "direction": "inbound",
        "transcript": "Agent: I can take that payment now. User: Yes please.",
    },
    "args": {"amount": "150.00", "mode": "charge", "gateway": "stripe", "memory": "Order 42"},
}

# Vapi's `tool-calls` server message (https://docs.vapi.ai/tools/custom-tools and the
# ServerMessageToolCalls schema, https://docs.vapi.ai/api-reference/webhooks/server-message).
VAPI_REQUEST: dict[str, Any] = {
    "message": {
        "timestamp": 1764000000000,
        "type": "tool-calls",
        "call": {"id": "5c4d030f-43e3-4e65-899e-8148521e660f", "type": "inboundPhoneCall"},
        "customer": {"number": "+14155550100"},
        "phoneNumber": {"number": "+14155550199"},
        "toolCallList": [
            {
                "id": "call_mo4fzh29P7jhXSaIKn7Pkq1Y",
                "type": "function",
                "function": {
                    "name": "create_payment_session",
                    "arguments": {"amount": "150.00", "mode": "charge", "gateway": "stripe"},
                },
            }
        ],
    }
}


def retell_signature(body: bytes, api_key: str, at_ms: int | None = None) -> str:
    """As Retell's SDK signs: v=<ms>,d=hex(HMAC-SHA256(api key, body + ms))."""
    stamp = str(at_ms if at_ms is not None else int(time.time() * 1000))
    digest = hmac.new(api_key.encode(), body + stamp.encode(), hashlib.sha256).hexdigest()
    return f"v={stamp},d={digest}"


@pytest.fixture
def integration_token(services: Services, merchant: dict[str, str]) -> str:
    with services.db.transaction() as tx:
        return issue_integration_token(tx, "acme", Environment.TEST, now=services.clock())


def post_retell(
    client: FlaskClient, token: str, body: dict[str, Any], signature: str | None = None
) -> Any:
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Retell-Signature"] = signature
    return client.post(f"/integrations/retell/acme?token={token}", data=raw, headers=headers)


def test_a_retell_function_call_opens_one_session_across_retries_and_the_caller_pays(
    client: FlaskClient,
    integration_token: str,
    services: Services,
    pay_by_phone: Callable[..., Any],
    leak_scan: LeakScan,
    request: pytest.FixtureRequest,
) -> None:
    answers = [post_retell(client, integration_token, RETELL_REQUEST) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    bodies = [a.get_json() for a in answers]
    assert len({b["session_id"] for b in bodies}) == 1
    created = bodies[0]
    assert created["transfer_number"] == "+15005550006"
    assert created["sip_uri"] == f"sip:{created['session_id']}@pay.sip.example.com"
    assert session_count(services) == 1

    assert pay_by_phone(created["sip_uri"]).succeeded
    status = post_retell(
        client,
        integration_token,
        {
            **RETELL_REQUEST,
            "name": "get_payment_session",
            "args": {"session_id": created["session_id"]},
        },
    )
    leak_scan.check("tool result", request.node.nodeid, status.get_data(as_text=True))
    found = status.get_json()
    assert found["status"] == "payment-success"
    assert found["caller"] == "+14155550100"  # from the call object's from_number
    assert found["memory"] == "Order 42"


def test_retell_needs_the_projects_token_and_a_valid_signature_once_a_key_is_set(
    client: FlaskClient, integration_token: str, services: Services
) -> None:
    assert post_retell(client, "whk_wrong", RETELL_REQUEST).status_code == 401
    assert post_retell(client, "", RETELL_REQUEST).status_code == 401
    with services.db.transaction() as tx:
        set_retell_key(
            tx,
            "acme",
            Environment.TEST,
            RETELL_API_KEY,
            sealer=services.sealer(RETELL_KEY_PURPOSE),
            now=services.clock(),
        )
    raw = json.dumps(RETELL_REQUEST).encode()
    unsigned = post_retell(client, integration_token, RETELL_REQUEST)
    assert unsigned.status_code == 401
    assert unsigned.get_json() == {"detail": "Invalid X-Retell-Signature"}
    forged = retell_signature(raw, "key_someone_else")
    assert post_retell(client, integration_token, RETELL_REQUEST, forged).status_code == 401
    stale = retell_signature(raw, RETELL_API_KEY, int(time.time() * 1000) - 6 * 60 * 1000)
    assert post_retell(client, integration_token, RETELL_REQUEST, stale).status_code == 401
    assert session_count(services) == 0
    signed = retell_signature(raw, RETELL_API_KEY)
    assert post_retell(client, integration_token, RETELL_REQUEST, signed).status_code == 200
    assert session_count(services) == 1


def test_retell_bad_arguments_are_422_with_the_api_messages(
    client: FlaskClient, integration_token: str, services: Services
) -> None:
    bad = {**RETELL_REQUEST, "args": {**RETELL_REQUEST["args"], "amount": "1.234"}}
    answer = post_retell(client, integration_token, bad)
    assert answer.status_code == 422
    assert answer.get_json()["detail"][0]["loc"] == ["amount"]
    malformed = post_retell(client, integration_token, {"name": "collect_payment"})
    assert malformed.status_code == 422
    assert session_count(services) == 0


def post_vapi(client: FlaskClient, body: dict[str, Any], **headers: str) -> Any:
    return client.post("/integrations/vapi/acme", json=body, headers=headers)


@pytest.mark.parametrize("auth", ["api-key", "secret"])
def test_a_vapi_tool_call_opens_one_session_across_retries_and_the_caller_pays(
    auth: str,
    client: FlaskClient,
    merchant: dict[str, str],
    integration_token: str,
    services: Services,
    pay_by_phone: Callable[..., Any],
    leak_scan: LeakScan,
    request: pytest.FixtureRequest,
) -> None:
    headers = (
        {"Authorization": merchant["test"]}
        if auth == "api-key"
        else {"X-Vapi-Secret": integration_token}
    )
    answers = [post_vapi(client, VAPI_REQUEST, **headers) for _ in range(3)]
    assert {a.status_code for a in answers} == {200}
    results = [a.get_json()["results"] for a in answers]
    for [result] in results:
        assert result["toolCallId"] == "call_mo4fzh29P7jhXSaIKn7Pkq1Y"
        assert isinstance(result["result"], str)  # Vapi hands the model a string
    created = [json.loads(r[0]["result"]) for r in results]
    assert len({c["session_id"] for c in created}) == 1
    assert session_count(services) == 1

    assert pay_by_phone(created[0]["sip_uri"]).succeeded
    check = json.loads(json.dumps(VAPI_REQUEST))
    check["message"]["toolCallList"][0]["function"] = {
        "name": "get_payment_session",
        "arguments": json.dumps({"session_id": created[0]["session_id"]}),  # OpenAI-style string
    }
    answer = post_vapi(client, check, **headers)
    leak_scan.check("tool result", request.node.nodeid, answer.get_data(as_text=True))
    [result] = answer.get_json()["results"]
    assert json.loads(result["result"])["status"] == "payment-success"


def test_vapi_without_credentials_is_401_and_a_bad_tool_call_is_an_error_result(
    client: FlaskClient, merchant: dict[str, str], services: Services
) -> None:
    assert post_vapi(client, VAPI_REQUEST).status_code == 401
    assert post_vapi(client, VAPI_REQUEST, **{"X-Vapi-Secret": "whk_nope"}).status_code == 401
    bad = json.loads(json.dumps(VAPI_REQUEST))
    bad["message"]["toolCallList"][0]["function"]["arguments"]["gateway"] = "paypal"
    answer = post_vapi(client, bad, Authorization=merchant["test"])
    [result] = answer.get_json()["results"]
    assert "result" not in result
    assert json.loads(result["error"])["detail"][0]["loc"] == ["gateway"]
    assert session_count(services) == 0


def test_a_vapi_token_of_one_project_does_not_open_another(
    client: FlaskClient, integration_token: str, make_project: Callable[..., str]
) -> None:
    make_project("other", "Acme Inc")
    answer = client.post(
        "/integrations/vapi/other", json=VAPI_REQUEST, headers={"X-Vapi-Secret": integration_token}
    )
    assert answer.status_code == 401


@pytest.mark.parametrize("environment", [Environment.TEST, Environment.LIVE])
def test_an_integration_token_is_rate_limited_under_its_mode_like_an_api_key(
    environment: Environment, services: Services, merchant: dict[str, str]
) -> None:
    with services.db.transaction() as tx:
        token = issue_integration_token(tx, "acme", environment, now=services.clock())
    two, many = "2/hour", "50/hour"
    live, test = (two, many) if environment is Environment.LIVE else (many, two)
    limited = create_app(services=tuned(services, rate_limit_live=live, rate_limit_test=test))
    client = limited.test_client()
    lookup = {"session_id": str(uuid.uuid4())}  # any tool call counts, found or not
    retell = {**RETELL_REQUEST, "name": "get_payment_session", "args": lookup}
    vapi = json.loads(json.dumps(VAPI_REQUEST))
    vapi["message"]["toolCallList"][0]["function"] = {
        "name": "get_payment_session",
        "arguments": lookup,
    }

    retells = [post_retell(client, token, retell) for _ in range(3)]
    vapis = [post_vapi(client, vapi, **{"X-Vapi-Secret": token}) for _ in range(3)]

    for answers in (retells, vapis):  # each endpoint has a budget of its own
        assert [a.status_code == 429 for a in answers] == [False, False, True]
        refused = answers[-1]
        assert refused.get_json() == {"detail": "2 per 1 hour"}
        assert 0 < int(refused.headers["Retry-After"]) <= 3600
    # A token the view does not accept is refused as before, not counted against the good one.
    assert post_retell(client, "whk_wrong", retell).status_code == 401
    # The merchant's API key keeps its own budget on the same endpoint.
    assert post_vapi(client, vapi, Authorization=merchant["test"]).status_code == 200
