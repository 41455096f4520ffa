"""The MCP server: the payment tools, built with the official `mcp` SDK's low-level `Server`.

Served over Streamable HTTP by api/integrations/mcp.py and over stdio by `paydial mcp`. Kept
apart from the Flask view so that only a request to /mcp (or `paydial mcp`) pays for importing
the SDK: gunicorn workers boot without it.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import mcp_types as types
from flask import Response
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from api.integrations.tools import TOOLS, ToolError
from payments.accounts import Caller
from payments.services import Services

INSTRUCTIONS = (
    "Paydial takes card payments for you over the phone. Create a payment session, transfer "
    "the caller to its sip_uri (with the X-Paydial-Session header) or phone number, and read "
    "the result with get_payment_session when the caller comes back. Never collect, repeat or "
    "store card numbers yourself."
)


def _text_result(body: dict[str, Any], *, is_error: bool) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(text=json.dumps(body))],
        structured_content=body,
        is_error=is_error,
    )


def build_server(services: Services, caller: Caller) -> Server[Any]:
    """An MCP server whose tools act for `caller` (one account, one mode)."""

    async def list_tools(
        _ctx: Any, _params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[
                types.Tool(name=t.name, description=t.description, input_schema=t.input_schema())
                for t in TOOLS.values()
            ]
        )

    async def call_tool(_ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        tool = TOOLS.get(params.name)
        if tool is None:
            return _text_result({"detail": f"Unknown tool {params.name!r}"}, is_error=True)
        try:
            return _text_result(tool.call(services, caller, params.arguments or {}), is_error=False)
        except ToolError as error:
            return _text_result(error.body(), is_error=True)

    return Server(
        "paydial",
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def exchange(server: Server[Any], scope: dict[str, Any], body: bytes) -> Response:
    """One HTTP request through the SDK's stateless streamable-HTTP handler."""
    status = 500
    headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []
    answered = anyio.Event()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            headers.extend(
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in message["headers"]
            )
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                answered.set()

    manager = StreamableHTTPSessionManager(server, json_response=True, stateless=True)
    async with manager.run():
        await manager.handle_request(scope, receive, send)  # type: ignore[arg-type]
    return Response(b"".join(chunks), status=status, headers=headers)


def serve_stdio(services: Services, caller: Caller) -> None:
    """`paydial mcp --key …`: the same tools for a local client speaking MCP on stdin/stdout."""
    server = build_server(services, caller)

    async def main() -> None:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    anyio.run(main)
