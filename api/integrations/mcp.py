"""POST /mcp: the MCP server over Streamable HTTP, for the merchant's API key.

The official `mcp` SDK answers, through its `StreamableHTTPSessionManager` in stateless,
JSON-response mode (https://modelcontextprotocol.io/specification/2025-06-18/basic/transports
#streamable-http): every POST carries one JSON-RPC message and gets one JSON answer, with no
session kept between requests, so any web process can answer any request. There is no GET
stream to open and no session to DELETE, so those methods are a 405, as the transport allows.

Why a Flask view and not a mounted ASGI app (through an ASGI-to-WSGI adapter): the web
processes are WSGI (gunicorn, see the Procfile), and auth, the per-key rate limits, request
logging and error rendering are Flask's. The view authenticates the API key like every /v1
route, then hands the request to the SDK's ASGI handler on a private event loop in the
request's own thread (`anyio.run`), collects the answer and returns it. No event-loop thread
outlives the request, nothing is shared between workers, and a tool's database work blocks only
the loop that serves this one request.
"""

from __future__ import annotations

from typing import Any

import anyio
from flask import Blueprint, Response, request

from api.auth import current_caller, require_api_key
from api.extension import current_services

bp = Blueprint("mcp", __name__)


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


@bp.post("/mcp")
@require_api_key
def mcp_endpoint() -> Response:
    from api.integrations.mcp_server import build_server, exchange  # the SDK loads on first use

    server = build_server(current_services(), current_caller())
    response: Response = anyio.run(exchange, server, _scope(), request.get_data())
    return response
