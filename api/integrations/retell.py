"""Retell custom functions: POST /integrations/retell/{project}?token=whk_…

Retell sends `{"name", "call", "args"}` with `X-Retell-Signature`, and retries a failed request
up to twice (https://docs.retellai.com/build/single-multi-prompt/custom-function). The project's
integration token rides in the query string, as the function URL is all Retell lets you set per
function; when a Retell API key is configured for the project (`paydial integration retell-key`),
the signature is required too: `v=<unix ms>,d=<hex HMAC-SHA256(api key, raw body + ms)>`,
within 5 minutes (https://docs.retellai.com/features/secure-webhook; the algorithm is the SDK's
`verify`, https://github.com/RetellAI/retell-python-sdk/blob/main/src/retell/lib/webhook_auth.py).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field
from werkzeug.exceptions import Unauthorized

from api.extension import current_services
from api.integrations.tools import ToolError, integration_caller, platform_call
from api.limits import count_integration_request
from api.validation import parse_body
from payments.integrations import RETELL_KEY_PURPOSE, authenticate_integration, retell_key

bp = Blueprint("retell", __name__)

SIGNATURE = re.compile(r"^v=(\d+),d=([0-9a-f]+)$")
SIGNATURE_TOLERANCE_MS = 5 * 60 * 1000


class RetellCall(BaseModel):
    model_config = ConfigDict(extra="ignore")

    call_id: str = Field(min_length=1, max_length=128)
    from_number: str | None = None


class RetellFunctionCall(BaseModel):
    name: str
    call: RetellCall
    args: dict[str, Any] = Field(default_factory=dict)


def signature_valid(body: bytes, api_key: str, header: str, now_ms: int) -> bool:
    match = SIGNATURE.match(header)
    if match is None or abs(now_ms - int(match.group(1))) > SIGNATURE_TOLERANCE_MS:
        return False
    expected = hmac.new(api_key.encode(), body + match.group(1).encode(), hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), match.group(2))


@bp.post("/integrations/retell/<project>")
def retell_function(project: str) -> tuple[Response, int] | Response:
    services = current_services()
    with services.db.read() as tx:
        access = authenticate_integration(tx, project, request.args.get("token", ""))
        if access is None:
            raise Unauthorized("Invalid integration token")
        key = retell_key(tx, access, services.sealer(RETELL_KEY_PURPOSE))
    if key is not None and not signature_valid(
        request.get_data(),
        key,
        request.headers.get("X-Retell-Signature", ""),
        int(time.time() * 1000),
    ):
        raise Unauthorized("Invalid X-Retell-Signature")
    count_integration_request(request.args.get("token", ""), access.environment)
    body = parse_body(RetellFunctionCall)
    try:
        result = platform_call(
            services,
            integration_caller(access),
            body.name,
            body.args,
            project=project,
            call_id=body.call.call_id,
            from_number=body.call.from_number,
        )
    except ToolError as error:
        return jsonify(error.body()), 422
    return jsonify(result)
