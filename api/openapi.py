"""The machine-readable contract at /openapi.json, built from the pydantic models the views use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from api import schemas
from api.deliveries import DeliveriesQuery
from api.frame import CSRF_HEADER
from api.integrations.retell import RetellFunctionCall
from api.integrations.vapi import VapiServerMessage
from api.sessions import CallerQuery

REF_TEMPLATE = "#/components/schemas/{model}"


class _SeedStyleSchema(GenerateJsonSchema):
    """Like pydantic's, minus empty defaults (`null`, `[]`) that the seeds leave out."""

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        value = super().default_schema(schema)
        if value.get("default", ...) in (None, []):
            value.pop("default")
        return value


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    tags: tuple[str, ...]
    responses: dict[int, type[BaseModel] | str]
    description: str | None = None
    request: type[BaseModel] | None = None
    request_content_type: str = "application/json"
    parameters: tuple[dict[str, Any], ...] = ()
    api_key: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def path_param(name: str, schema_format: str | None = None) -> dict[str, Any]:
    schema = {"type": "string"} | ({"format": schema_format} if schema_format else {})
    return {"name": name, "in": "path", "required": True, "schema": schema}


def query_params(model: type[BaseModel]) -> tuple[dict[str, Any], ...]:
    """The query parameters a view parses with `model`, with the limits it enforces."""
    schema = model.model_json_schema()
    return tuple(
        {
            "name": name,
            "in": "query",
            "required": name in schema.get("required", []),
            **({"description": field["description"]} if "description" in field else {}),
            "schema": {k: v for k, v in field.items() if k not in ("title", "description")},
        }
        for name, field in schema["properties"].items()
    )


SESSION_ID = path_param("session_id", "uuid")
# What each error status means on this API; every body is documented by its model.
RESPONSE_DESCRIPTIONS = {
    401: "Missing, malformed or revoked API key",
    402: "The card was declined",
    403: "The frame's CSRF token is missing or wrong",
    404: "Not found, or outside the key's reach",
    409: "Conflicts with the session's state, or the Idempotency-Key was used for another request",
    410: "The session has expired",
    422: "Validation Error",
    429: "Too many requests; retry after `Retry-After` seconds",
    503: "Nothing was done; retry after `Retry-After` seconds",
}
RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer", "minimum": 0}}
}
AUTH_ERRORS: dict[int, type[BaseModel] | str] = {
    401: schemas.Detail,
    404: schemas.Detail,
    429: schemas.Detail,
}
CREATE_SESSION_DESCRIPTION = (
    "Create a new payment session.\n\nReturns minimal identifiers needed for polling.\n\n"
    "**Authentication:** API Key (Bearer token)"
)
CREATE_WIDGET_SESSION_DESCRIPTION = (
    "Create a chat/web payment session.\n\nCall this from your **server** with your secret API "
    "key. Hand the returned\n`session_id` to your frontend and mount the widget:\n"
    '`Maven.createPayment({ sessionId }).mount("#slot")`.\n\nTheme, labels, and fields are set '
    "once per project in the dashboard\n(Chat Payments tab → Customize) and applied automatically."
)


class TwilioWebhookForm(BaseModel):
    """What Twilio posts to /twilio/* (form-encoded); Twilio adds parameters without notice."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    CallSid: str
    AccountSid: str
    From: str | None = None
    To: str | None = None
    CallStatus: str | None = None
    Digits: str | None = None
    FinishedOnKey: str | None = None
    DialCallStatus: str | None = None
    ErrorCode: str | None = None
    ErrorUrl: str | None = None
    SipHeader_X_Paydial_Session: str | None = Field(None, alias="SipHeader_X-Paydial-Session")


_TWIML_RESPONSES = {
    "200": {"description": "TwiML", "content": {"text/xml": {"schema": {"type": "string"}}}},
    "403": {"description": "Missing or invalid X-Twilio-Signature (nothing was changed)"},
    "422": {
        "description": "A NUL character in the query or the form (nothing was changed)",
        "content": {
            "application/json": {
                "schema": {"$ref": REF_TEMPLATE.format(model="HTTPValidationError")}
            }
        },
    },
    "429": {"description": "A request carrying an API key is rate-limited like the API"},
}


def _twilio(path: str, summary: str, parameters: tuple[dict[str, Any], ...] = ()) -> Operation:
    """A Twilio webhook: signed form post in, TwiML out."""
    name = path.strip("/").replace("/", "_")
    return Operation(
        "post",
        path,
        f"{name}_post",
        summary,
        ("Twilio webhooks",),
        request=TwilioWebhookForm,
        request_content_type="application/x-www-form-urlencoded",
        parameters=(
            {
                "name": "X-Twilio-Signature",
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
            },
            *parameters,
        ),
        responses={},
        api_key=False,
        extra={"responses": _TWIML_RESPONSES},
    )


def _page(
    path: str,
    operation_id: str,
    summary: str,
    media_type: str,
    parameters: tuple[dict[str, Any], ...] = (),
) -> Operation:
    """A non-JSON resource of the widget (script, stylesheet, the card frame, the demo)."""
    return Operation(
        "get",
        path,
        operation_id,
        summary,
        ("Widget",),
        parameters=parameters,
        responses={},
        api_key=False,
        extra={
            "responses": {
                "200": {
                    "description": summary,
                    "content": {media_type: {"schema": {"type": "string"}}},
                },
                "403": {
                    "description": "The requesting origin is not allowed to frame this session"
                },
                "404": {"description": "No such resource"},
                "410": {"description": "The session has expired"},
                "422": {"description": "A NUL character in the query"},
            }
        },
    )


WIDGET_OPERATIONS: list[Operation] = [
    _page("/widget/v1/widget.js", "widget_js_get", "The embeddable script", "text/javascript"),
    Operation(
        "get",
        "/widget/v1/widget.{version}.js",
        "widget_js_versioned_get",
        "The embeddable script under its content hash (cached for a year, immutable)",
        ("Widget",),
        parameters=(path_param("version"),),
        responses={},
        api_key=False,
        extra={
            "responses": {
                "200": {
                    "description": "The script",
                    "content": {"text/javascript": {"schema": {"type": "string"}}},
                },
                "302": {"description": "An old version: the current one's URL is in Location"},
            }
        },
    ),
    _page(
        "/widget/assets/{filename}",
        "widget_asset_get",
        "A static asset of the card frame",
        "application/octet-stream",
        (path_param("filename"),),
    ),
    _page(
        "/widget/{session_id}",
        "widget_frame_get",
        "The hosted card form",
        "text/html",
        (
            path_param("session_id"),
            {"name": "origin", "in": "query", "required": False, "schema": {"type": "string"}},
        ),
    ),
    _page("/demo", "demo_get", "A test-mode demo page (only under `paydial serve`)", "text/html"),
    Operation(
        "get",
        "/v1/widget-sessions/{session_id}",
        "get_widget_session_v1_widget_sessions__id__get",
        "What the frame needs to render (the id is the credential)",
        ("Widget Sessions",),
        parameters=(path_param("session_id"),),
        api_key=False,
        responses={200: schemas.WidgetSessionOut, 404: schemas.Detail},
    ),
    Operation(
        "post",
        "/v1/widget-sessions/{session_id}/charge",
        "charge_widget_session_v1_widget_sessions__id__charge_post",
        "Charge from the card frame (CSRF-bound to the session)",
        ("Widget Sessions",),
        request=schemas.ChargeRequest,
        api_key=False,
        parameters=(
            path_param("session_id"),
            {"name": CSRF_HEADER, "in": "header", "required": True, "schema": {"type": "string"}},
        ),
        responses={
            200: schemas.ChargeApproved,
            402: schemas.ChargeDeclined,
            403: schemas.Detail,
            404: schemas.Detail,
            409: schemas.Detail,
            410: schemas.Detail,
            422: schemas.HTTPValidationError,
            429: schemas.ChargeRefused,
        },
    ),
]

OPERATIONS: list[Operation] = [
    Operation(
        "post",
        "/v1/sessions",
        "create_session_v1_sessions_post",
        "Create Session",
        ("Public API (v1)", "Sessions"),
        description=CREATE_SESSION_DESCRIPTION,
        request=schemas.SessionCreate,
        responses={
            201: schemas.SessionCreateResponse,
            409: schemas.Detail,
            422: schemas.HTTPValidationError,
            **AUTH_ERRORS,
        },
    ),
    Operation(
        "get",
        "/v1/sessions/{session_id}",
        "get_session_v1_sessions__session_id__get",
        "Get Session",
        ("Public API (v1)", "Sessions"),
        description="The full session: status, amount, card, processor identifiers, error.",
        parameters=(SESSION_ID,),
        responses={
            200: schemas.SessionGetResponse,
            422: schemas.HTTPValidationError,
            **AUTH_ERRORS,
        },
    ),
    Operation(
        "get",
        "/v1/sessions",
        "find_session_v1_sessions_get",
        "Most recent session for a caller",
        ("Public API (v1)", "Sessions"),
        description=(
            "The caller's most recent active session, else the latest finished one. An unencoded "
            "`+` in the query (read as a space) is accepted."
        ),
        parameters=query_params(CallerQuery),
        responses={
            200: schemas.SessionGetResponse,
            422: schemas.HTTPValidationError,
            **AUTH_ERRORS,
        },
    ),
    Operation(
        "post",
        "/v1/sessions/{session_id}/cancel",
        "cancel_session_v1_sessions__session_id__cancel_post",
        "Cancel Session",
        ("Public API (v1)", "Sessions"),
        description="Cancel a `pending` or `collecting` session; 409 once it has gone further.",
        parameters=(SESSION_ID,),
        responses={
            204: "Cancelled",
            409: schemas.Detail,
            422: schemas.HTTPValidationError,
            **AUTH_ERRORS,
        },
    ),
    Operation(
        "post",
        "/v1/sessions/{session_id}/refunds",
        "create_refund_v1_sessions__session_id__refunds_post",
        "Refund all or part of the session's captured payment (sent to the gateway off the"
        " request: `pending` until it answers)",
        ("Public API (v1)", "After the payment"),
        description=(
            "The gateway is asked first whether it would refund the payment now: Authorize.net "
            "and Braintree refund settled payments only, so an unsettled one is a 409 saying to "
            "void it instead (`POST /v1/sessions/{session_id}/void`). If the gateway cannot be "
            "asked, nothing is recorded and the answer is a 503 with `Retry-After`."
        ),
        request=schemas.RefundCreate,
        parameters=(path_param("session_id"),),
        responses={
            201: schemas.RefundOut,
            409: schemas.Detail,
            422: schemas.HTTPValidationError,
            503: schemas.Detail,
            **AUTH_ERRORS,
        },
    ),
    Operation(
        "get",
        "/v1/sessions/{session_id}/refunds",
        "list_refunds_v1_sessions__session_id__refunds_get",
        "The session's refunds, oldest first",
        ("Public API (v1)", "After the payment"),
        parameters=(path_param("session_id"),),
        responses={200: schemas.RefundList, **AUTH_ERRORS},
    ),
    Operation(
        "post",
        "/v1/sessions/{session_id}/capture",
        "capture_session_v1_sessions__session_id__capture_post",
        "Capture all or part of a payment-authorized session's authorization",
        ("Public API (v1)", "After the payment"),
        request=schemas.CaptureCreate,
        parameters=(path_param("session_id"),),
        responses={
            202: schemas.OperationOut,
            409: schemas.Detail,
            422: schemas.HTTPValidationError,
            **AUTH_ERRORS,
        },
    ),
    Operation(
        "post",
        "/v1/sessions/{session_id}/void",
        "void_session_v1_sessions__session_id__void_post",
        "Void an authorization or an unsettled charge, in full",
        ("Public API (v1)", "After the payment"),
        parameters=(path_param("session_id"),),
        responses={
            202: schemas.OperationOut,
            409: schemas.Detail,
            422: schemas.HTTPValidationError,
            **AUTH_ERRORS,
        },
    ),
    Operation(
        "post",
        "/v1/widget-sessions",
        "create_widget_session_v1_widget_sessions_post",
        "Create a chat payment session",
        ("Widget Sessions",),
        description=CREATE_WIDGET_SESSION_DESCRIPTION,
        request=schemas.CreateWidgetSession,
        responses={
            201: schemas.WidgetSessionCreated,
            409: schemas.Detail,
            422: schemas.HTTPValidationError,
            **AUTH_ERRORS,
        },
    ),
    Operation(
        "get",
        "/v1/webhook-deliveries",
        "list_webhook_deliveries_v1_webhook_deliveries_get",
        "Webhook delivery attempts for a session",
        ("Webhooks",),
        parameters=query_params(DeliveriesQuery),
        responses={
            200: schemas.WebhookDeliveryList,
            422: schemas.HTTPValidationError,
            **AUTH_ERRORS,
        },
    ),
    Operation(
        "get",
        "/v1/projects/{slug}/webhook-deliveries",
        "list_project_webhook_deliveries_v1_projects__slug__webhook_deliveries_get",
        "Webhook delivery attempts for the events about the project itself, which belong to no"
        " session (`widget-charges-paused`)",
        ("Webhooks",),
        parameters=(path_param("slug"),),
        responses={200: schemas.WebhookDeliveryList, **AUTH_ERRORS},
    ),
    Operation(
        "post",
        "/v1/webhook-deliveries/{delivery_id}/replay",
        "replay_webhook_delivery_v1_webhook_deliveries__delivery_id__replay_post",
        "Send a delivery's event again now",
        ("Webhooks",),
        parameters=(path_param("delivery_id"),),
        responses={
            201: schemas.WebhookDeliveryOut,
            409: schemas.Detail,
            422: schemas.HTTPValidationError,
            **AUTH_ERRORS,
        },
    ),
    Operation(
        "get",
        "/v1/auth/check",
        "auth_check_v1_auth_check_get",
        "Check the API key: its mode and account",
        ("Public API (v1)", "Account"),
        responses={200: schemas.AuthCheck, **AUTH_ERRORS},
    ),
    Operation(
        "get",
        "/v1/projects",
        "list_projects_v1_projects_get",
        "The key's account's projects",
        ("Public API (v1)", "Account"),
        responses={200: schemas.ProjectList, **AUTH_ERRORS},
    ),
    Operation(
        "get",
        "/v1/projects/{slug}",
        "get_project_v1_projects__slug__get",
        "A project and its settings",
        ("Public API (v1)", "Account"),
        parameters=(path_param("slug"),),
        responses={200: schemas.ProjectOut, **AUTH_ERRORS},
    ),
    Operation(
        "patch",
        "/v1/projects/{slug}",
        "update_project_v1_projects__slug__patch",
        "Change project settings: a JSON merge patch (send only what changes; null restores the"
        " default); the change is recorded in the audit log and applies from the next call",
        ("Public API (v1)", "Account"),
        request=schemas.ProjectChanges,
        parameters=(path_param("slug"),),
        responses={
            200: schemas.ProjectOut,
            422: schemas.HTTPValidationError,
            **AUTH_ERRORS,
        },
    ),
    Operation(
        "get",
        "/v1/sessions/{session_id}/events",
        "session_events_v1_sessions__session_id__events_get",
        "Status changes as Server-Sent Events, until the terminal one (Paydial addition)",
        ("Public API (v1)", "Sessions"),
        parameters=(
            path_param("session_id"),
            {
                "name": "last_event_id",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
                "description": "Resume after this event id (or send the Last-Event-ID header)",
            },
        ),
        responses={422: schemas.HTTPValidationError, **AUTH_ERRORS},
        extra={
            "responses": {
                "200": {
                    "description": "`id:` event id, `event: status`, `data:` the change as JSON",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
            }
        },
    ),
    Operation(
        "post",
        "/mcp",
        "mcp_post",
        "The MCP server (Streamable HTTP, stateless, JSON answers): tools for AI agents",
        ("AI agents",),
        responses={},
        extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["jsonrpc", "method"],
                            "properties": {
                                "jsonrpc": {"const": "2.0"},
                                "method": {"type": "string"},
                            },
                        }
                    }
                },
            },
            "responses": {"default": {"description": "The MCP SDK's JSON-RPC answer"}},
        },
    ),
    Operation(
        "post",
        "/integrations/retell/{project}",
        "retell_function_post",
        "A Retell custom function call (integration token in `token`)",
        ("AI agents",),
        request=RetellFunctionCall,
        api_key=False,
        parameters=(
            path_param("project"),
            {"name": "token", "in": "query", "required": True, "schema": {"type": "string"}},
        ),
        responses={
            200: "The tool's answer as JSON",
            401: schemas.Detail,
            422: schemas.HTTPValidationError,
        },
    ),
    Operation(
        "post",
        "/integrations/vapi/{project}",
        "vapi_tool_calls_post",
        "Vapi `tool-calls` server message (API key, or X-Vapi-Secret integration token)",
        ("AI agents",),
        request=VapiServerMessage,
        parameters=(path_param("project"),),
        responses={
            200: '`{"results": [{"toolCallId", "result" or "error"}]}`',
            422: schemas.HTTPValidationError,
            **AUTH_ERRORS,
        },
    ),
    _twilio("/twilio/voice", "Voice URL of the number and the SIP domain: bind the call"),
    _twilio(
        "/twilio/gather",
        "A <Gather> action",
        ({"name": "step", "in": "query", "required": False, "schema": {"type": "string"}},),
    ),
    _twilio("/twilio/result", "The hold <Redirect> while the gateway answers"),
    _twilio("/twilio/dial", "The <Dial action> of the transfer back: records transfer_status"),
    _twilio("/twilio/status", "Call status callback: an ended call abandons its open session"),
    _twilio("/twilio/fallback", "Fallback URL: apologise, transfer back or hang up"),
    *WIDGET_OPERATIONS,
    Operation(
        "get",
        "/health",
        "health_get",
        "Liveness",
        ("Operations",),
        api_key=False,
        responses={200: schemas.Health},
    ),
    Operation(
        "get",
        "/openapi.json",
        "openapi_get",
        "This document",
        ("Operations",),
        api_key=False,
        responses={200: "The OpenAPI 3.1 document"},
    ),
]


# What Paydial POSTs to the project's webhook URL on each status change it announces.
WEBHOOKS = {
    "session-status": {
        "post": {
            "summary": "A session reached a status the project is told about",
            "description": (
                "Sent for payment-success, payment-authorized and payment-failed, and for expired, "
                "cancelled and abandoned when the project opted in. Verify `Maven-Signature`: "
                '`t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`.'
            ),
            "operationId": "session_status_webhook",
            "parameters": [
                {
                    "name": "Maven-Signature",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string"},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": REF_TEMPLATE.format(model="SessionWebhook")}
                    }
                },
            },
            "responses": {"2XX": {"description": "Received; any other answer is retried"}},
        }
    }
}


def _response(status: int, body: type[BaseModel] | str) -> dict[str, Any]:
    if isinstance(body, str):
        return {"description": body}
    response: dict[str, Any] = {
        "description": RESPONSE_DESCRIPTIONS.get(status, "Successful Response"),
        "content": {
            "application/json": {"schema": {"$ref": REF_TEMPLATE.format(model=body.__name__)}}
        },
    }
    if status in (429, 503):
        response["headers"] = RETRY_AFTER
    return response


def build_document(operations: list[Operation]) -> dict[str, Any]:
    models: set[type[BaseModel]] = set()
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        entry: dict[str, Any] = {
            "tags": list(op.tags),
            "summary": op.summary,
            **({"description": op.description} if op.description else {}),
            "operationId": op.operation_id,
            **op.extra,
            "responses": {  # extra responses (other media types) join the JSON ones
                **{str(code): _response(code, body) for code, body in op.responses.items()},
                **op.extra.get("responses", {}),
            },
        }
        models.update(body for body in op.responses.values() if not isinstance(body, str))
        if op.parameters:
            entry["parameters"] = list(op.parameters)
        if op.request is not None:
            models.add(op.request)
            entry["requestBody"] = {
                "required": True,
                "content": {
                    op.request_content_type: {
                        "schema": {"$ref": REF_TEMPLATE.format(model=op.request.__name__)}
                    }
                },
            }
        if op.api_key:
            entry["security"] = [{"API Key": []}]
        paths.setdefault(op.path, {})[op.method] = entry
    models.add(schemas.SessionWebhook)
    ordered = sorted(models, key=lambda m: m.__name__)
    _, definitions = models_json_schema(
        [(m, "validation") for m in ordered],
        ref_template=REF_TEMPLATE,
        schema_generator=_SeedStyleSchema,
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Paydial API",
            "description": "Voice payment infrastructure, wire-compatible with the Maven API.",
            "version": "1.0.0",
        },
        "paths": paths,
        "webhooks": WEBHOOKS,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                "API Key": {
                    "type": "http",
                    "description": "Enter your API key: mvn_test_xxx or mvn_live_xxx",
                    "scheme": "bearer",
                }
            },
        },
    }
