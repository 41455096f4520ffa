"""The MCP server: the payment tools over Streamable HTTP at /mcp and over stdio.

Built with the official `mcp` SDK's low-level `Server` and its `StreamableHTTPSessionManager`
in stateless, JSON-response mode (https://modelcontextprotocol.io/specification/2025-06-18/
basic/transports#streamable-http): every POST carries one JSON-RPC message and gets one JSON
answer, with no session to keep between requests, so any web process can answer any request.

Why a Flask view and not a mounted ASGI app: the web processes are WSGI (gunicorn, see the
Procfile), and auth, the per-key rate limits, request logging and error rendering are Flask's.
The view authenticates the API key like every /v1 route, then hands the request to the SDK's
ASGI handler on a private event loop in the request's own thread (`anyio.run`), collects the
answer and returns it. No event-loop thread outlives the request, nothing is shared between
workers, and a tool's database work blocks only the loop that is serving this one request.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import mcp_types as types
from flask import Blueprint, Response, request
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from api.auth import Caller, current_caller, require_api_key
from api.extension import current_services
from api.integrations.tools import TOOLS, ToolError
from payments.services import Services

bp = Blueprint("mcp", __name__)

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


async def _exchange(server: Server[Any], scope: dict[str, Any], body: bytes) -> Response:
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


def _scope() -> dict[str, Any]:
    server_name, _, server_port = request.host.partition(":")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": request.path.encode(),
        "root_path": "",
        "query_string": request.query_string,
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers],
        "client": (request.remote_addr or "", 0),
        "server": (server_name, int(server_port or 80)),
    }


@bp.route("/mcp", methods=["POST", "GET", "DELETE"])
@require_api_key
def mcp_endpoint() -> Response:
    server = build_server(current_services(), current_caller())
    response: Response = anyio.run(_exchange, server, _scope(), request.get_data())
    return response


def serve_stdio(services: Services, caller: Caller) -> None:
    """`paydial mcp --key …`: the same tools for a local client speaking MCP on stdin/stdout."""
    server = build_server(services, caller)

    async def main() -> None:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    anyio.run(main)
