"""The MCP server driven by the official `mcp` SDK's own client, over Streamable HTTP and stdio."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import mcp_types as types
import pytest
import requests
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from sqlalchemy import func, select

from api.integrations.tools import CreatePaymentSessionArgs
from payments.services import Services
from payments.store import PaymentSession
from tests.conftest import TEST_SECRET_KEY, TEST_TWILIO_TOKEN
from tests.integrations.conftest import VOICE as REST_VOICE
from tests.leakscan import LeakScan

VOICE = {**REST_VOICE, "call_id": "call_8f2c"}


@asynccontextmanager
async def mcp_client(server_url: str, authorization: str) -> Any:
    # generous: a loaded machine can take more than httpx's default 5 s to answer a tool call
    http = httpx2.AsyncClient(headers={"Authorization": authorization}, timeout=60)
    async with http, Client(streamable_http_client(f"{server_url}/mcp", http_client=http)) as c:
        yield c


def result_body(result: types.CallToolResult, leak_scan: LeakScan, where: str) -> dict[str, Any]:
    """The tool's JSON answer, after the leak scan has read its text."""
    [content] = result.content
    assert isinstance(content, types.TextContent)
    leak_scan.check("tool result", where, content.text)
    body: dict[str, Any] = json.loads(content.text)
    assert result.structured_content == body
    return body


def session_count(services: Services) -> int:
    with services.db.transaction() as tx:
        return int(tx.scalar(select(func.count()).select_from(PaymentSession)) or 0)


def test_the_tools_are_listed_with_the_rest_api_schemas(
    server_url: str, merchant: dict[str, str]
) -> None:
    async def scenario() -> list[types.Tool]:
        async with mcp_client(server_url, merchant["test"]) as client:
            return (await client.list_tools()).tools

    tools = {tool.name: tool for tool in asyncio.run(scenario())}
    assert set(tools) == {
        "create_payment_session",
        "get_payment_session",
        "find_payment_session_by_caller",
        "cancel_payment_session",
        "create_chat_payment_session",
    }
    create = tools["create_payment_session"]
    assert create.input_schema == CreatePaymentSessionArgs.model_json_schema()
    assert {"project", "caller", "amount", "mode", "gateway", "call_id"} <= set(
        create.input_schema["required"]
    )
    assert "sip_uri" in (create.description or "")
    assert "X-Paydial-Session" in (create.description or "")


def test_a_session_made_by_a_tool_call_is_paid_by_phone_and_read_back(
    server_url: str,
    merchant: dict[str, str],
    pay_by_phone: Callable[..., Any],
    leak_scan: LeakScan,
    request: pytest.FixtureRequest,
) -> None:
    where = request.node.nodeid

    async def create() -> dict[str, Any]:
        async with mcp_client(server_url, merchant["test"]) as client:
            result = await client.call_tool("create_payment_session", VOICE)
            assert not result.is_error
            return result_body(result, leak_scan, where)

    created = asyncio.run(create())
    assert created["status"] == "pending"
    assert created["transfer_headers"] == {"X-Paydial-Session": created["session_id"]}
    assert created["transfer_number"] == created["phone_number"]

    call = pay_by_phone(created["sip_uri"])
    assert call.succeeded

    async def read_back() -> tuple[dict[str, Any], dict[str, Any]]:
        async with mcp_client(server_url, merchant["test"]) as client:
            by_id = await client.call_tool(
                "get_payment_session", {"session_id": created["session_id"]}
            )
            by_caller = await client.call_tool(
                "find_payment_session_by_caller", {"caller": VOICE["caller"]}
            )
            return result_body(by_id, leak_scan, where), result_body(by_caller, leak_scan, where)

    session, found = asyncio.run(read_back())
    assert session["status"] == "payment-success" and session["is_terminal"] is True
    assert (session["card_brand"], session["card_last4"]) == ("visa", "4242")
    assert found["session_id"] == created["session_id"]


def test_the_same_tool_call_three_times_and_concurrently_opens_one_session(
    server_url: str, merchant: dict[str, str], services: Services
) -> None:
    async def scenario() -> list[str]:
        async with mcp_client(server_url, merchant["test"]) as client:
            again = [await client.call_tool("create_payment_session", VOICE) for _ in range(3)]
            racing = {**VOICE, "call_id": "call_race"}
            raced = await asyncio.gather(
                *(client.call_tool("create_payment_session", racing) for _ in range(4))
            )
        results = [*again, *raced]
        assert not any(result.is_error for result in results)
        return [str(result.structured_content["session_id"]) for result in results]

    ids = asyncio.run(scenario())
    assert len(set(ids[:3])) == 1
    assert len(set(ids[3:])) == 1
    assert session_count(services) == 2


def test_a_different_amount_for_the_same_call_is_a_tool_error_naming_call_id(
    server_url: str, merchant: dict[str, str], services: Services
) -> None:
    async def scenario() -> types.CallToolResult:
        async with mcp_client(server_url, merchant["test"]) as client:
            assert not (await client.call_tool("create_payment_session", VOICE)).is_error
            return await client.call_tool("create_payment_session", {**VOICE, "amount": "15.00"})

    result = asyncio.run(scenario())
    assert result.is_error
    [error] = result.structured_content["detail"]
    assert error["loc"] == ["call_id"] and error["type"] == "call_id_reused"
    assert session_count(services) == 1


@pytest.mark.parametrize(
    ("amount", "kind"),
    [("-5", "greater_than_equal"), ("1.001", "decimal_max_places"), ("0", "greater_than")],
)
def test_a_bad_amount_is_a_tool_error_naming_the_field(
    amount: str, kind: str, server_url: str, merchant: dict[str, str], services: Services
) -> None:
    async def scenario() -> types.CallToolResult:
        async with mcp_client(server_url, merchant["test"]) as client:
            return await client.call_tool("create_payment_session", {**VOICE, "amount": amount})

    result = asyncio.run(scenario())
    assert result.is_error
    [error] = result.structured_content["detail"]
    assert error["type"] == kind
    assert error["loc"] in (["amount"], [])  # "0" fails the charge-mode rule on the whole model
    assert "amount" in error["msg"].lower() or error["loc"] == ["amount"]
    assert session_count(services) == 0


def test_a_key_of_another_account_or_mode_sees_nothing(
    server_url: str,
    live_merchant: dict[str, str],
    make_project: Callable[..., str],
    make_key: Callable[..., str],
) -> None:
    make_project("rival", "Rival LLC")
    rival = f"Bearer {make_key('rival', 'test')}"
    merchant = live_merchant

    async def scenario() -> list[types.CallToolResult]:
        async with mcp_client(server_url, merchant["test"]) as client:
            created = await client.call_tool("create_payment_session", VOICE)
        session_id = created.structured_content["session_id"]
        answers = []
        for key in (rival, merchant["live"]):
            async with mcp_client(server_url, key) as client:
                answers += [
                    await client.call_tool("get_payment_session", {"session_id": session_id}),
                    await client.call_tool(
                        "find_payment_session_by_caller", {"caller": VOICE["caller"]}
                    ),
                    await client.call_tool("cancel_payment_session", {"session_id": session_id}),
                    await client.call_tool("create_payment_session", VOICE),
                ]
        return answers

    answers = asyncio.run(scenario())
    assert all(answer.is_error for answer in answers[:3])
    assert answers[0].structured_content == {"detail": "Session not found"}
    assert answers[1].structured_content == {"detail": "No session for this caller"}
    assert answers[3].structured_content == {"detail": "Project not found"}  # acme is not rival's
    # The live key of the same account may use acme, but its call_id space is its own mode's.
    assert not answers[7].is_error
    assert answers[7].structured_content["session_id"] != answers[0]


def test_mcp_without_a_valid_key_is_401(server_url: str, merchant: dict[str, str]) -> None:
    ping = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    assert requests.post(f"{server_url}/mcp", json=ping, timeout=30).status_code == 401
    wrong = {"Authorization": "Bearer mvn_test_wrong"}
    answer = requests.post(f"{server_url}/mcp", json=ping, headers=wrong, timeout=30)
    assert answer.status_code == 401
    assert answer.json() == {"detail": "Invalid or revoked API key"}


def test_paydial_mcp_serves_the_tools_over_stdio(
    cli_env: str, merchant: dict[str, str], services: Services, leak_scan: LeakScan
) -> None:
    import os

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "paydial.cli", "mcp", "--key", merchant["test"].removeprefix("Bearer ")],
        env={
            **os.environ,
            "DATABASE_URL": cli_env,
            "PAYDIAL_SECRET_KEY": TEST_SECRET_KEY,
            "TWILIO_AUTH_TOKEN": TEST_TWILIO_TOKEN,
        },
    )

    async def scenario() -> list[types.CallToolResult]:
        async with Client(params) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert "create_payment_session" in names
            return [await client.call_tool("create_payment_session", VOICE) for _ in range(2)]

    first, second = asyncio.run(scenario())
    assert not first.is_error
    assert first.structured_content == second.structured_content
    assert session_count(services) == 1
