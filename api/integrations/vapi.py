"""Vapi tool calls: POST /integrations/vapi/{project}, the `tool-calls` server message.

Vapi posts `{"message": {"type": "tool-calls", "call": {...}, "customer": {"number"},
"toolCallList": [{"id", "type": "function", "function": {"name", "arguments"}}]}}` and reads
`{"results": [{"toolCallId", "result"}]}` back, `result` being a string for the model
(https://docs.vapi.ai/tools/custom-tools, https://docs.vapi.ai/server-url/events). A tool's
server may send custom headers, so it authenticates with the merchant's API key
(`Authorization: Bearer mvn_…`) or with the project's integration token as the server's secret,
which Vapi sends as `X-Vapi-Secret` (https://docs.vapi.ai/server-url/server-authentication).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, Json
from werkzeug.exceptions import Unauthorized

from api.auth import bearer_token
from api.extension import current_services
from api.integrations.tools import ToolError, integration_caller, platform_call
from api.limits import count_integration_request
from api.validation import parse_body
from payments.accounts import Caller, authenticate
from payments.integrations import authenticate_integration

bp = Blueprint("vapi", __name__)


class VapiFunction(BaseModel):
    name: str
    # Vapi sends an object; OpenAI-style function calls carry a JSON string.
    arguments: dict[str, Any] | Json[dict[str, Any]] = Field(default_factory=dict)


class VapiToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    function: VapiFunction


class VapiNumber(BaseModel):
    model_config = ConfigDict(extra="ignore")

    number: str | None = None


class VapiCall(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=128)
    customer: VapiNumber | None = None


class VapiMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    call: VapiCall
    customer: VapiNumber | None = None
    toolCallList: list[VapiToolCall] = Field(default_factory=list)  # Vapi's name


class VapiServerMessage(BaseModel):
    message: VapiMessage


def _caller(project: str) -> Caller:
    """Who calls: the key's merchant (counted like every keyed request), else the project's
    integration, whose token is counted here (`api.limits`)."""
    token, secret = bearer_token(), request.headers.get("X-Vapi-Secret", "")
    with current_services().db.read() as tx:
        caller = authenticate(tx, token) if token is not None else None
        access = (
            authenticate_integration(tx, project, secret) if caller is None and secret else None
        )
    if caller is not None:
        return caller
    if access is not None:
        count_integration_request(secret, access.environment)
        return integration_caller(access)
    raise Unauthorized(
        "Send the API key as a Bearer token or the integration token as X-Vapi-Secret"
    )


@bp.post("/integrations/vapi/<project>")
def vapi_tool_calls(project: str) -> Response:
    caller = _caller(project)
    message = parse_body(VapiServerMessage).message
    customer = message.customer or message.call.customer
    results = []
    for tool_call in message.toolCallList:
        try:
            result = platform_call(
                current_services(),
                caller,
                tool_call.function.name,
                tool_call.function.arguments,
                project=project,
                call_id=message.call.id,
                from_number=customer.number if customer else None,
            )
            results.append({"toolCallId": tool_call.id, "result": json.dumps(result)})
        except ToolError as error:
            results.append({"toolCallId": tool_call.id, "error": json.dumps(error.body())})
    return jsonify({"results": results})
