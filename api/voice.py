"""Blueprint: Twilio's voice and SIP webhooks (signature-checked) -> binding and flow -> TwiML.

Routes (all POST, form-encoded, `X-Twilio-Signature` checked against PAYDIAL_PUBLIC_URL):

    /twilio/voice     a new call: bind it to a session or ask for the access code
    /twilio/gather    a <Gather> action (`?step=` names the step it asked for)
    /twilio/result    the hold <Redirect> while the gateway job runs
    /twilio/dial      the <Dial action> after the transfer back: records transfer_status
    /twilio/status    the call status callback: a call that ended abandons its open session
    /twilio/fallback  Twilio's fallback URL: apologise, transfer back or hang up

The call itself is `ivr.call.Call`; this module is only its HTTP edge. TwiML responses carry
`X-Paydial-Status` (the bound session's status) for `paydial call`; Twilio ignores it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import urlparse

from flask import Blueprint, Response, jsonify, request, url_for
from twilio.request_validator import RequestValidator, add_port, compare, remove_port
from werkzeug.exceptions import HTTPException

from api.errors import RequestValidationError
from api.extension import current_services
from ivr.call import Call

log = logging.getLogger(__name__)

bp = Blueprint("twilio", __name__, url_prefix="/twilio")

STATUS_HEADER = "X-Paydial-Status"


class PublicUrls:
    """Absolute URLs on PAYDIAL_PUBLIC_URL, the base Twilio calls and signs with."""

    def __init__(self, base: str) -> None:
        self._base = base.rstrip("/")

    def gather(self, step: str) -> str:
        return self._base + url_for("twilio.gather", step=step)

    def result(self) -> str:
        return self._base + url_for("twilio.result")

    def dial_done(self) -> str:
        return self._base + url_for("twilio.dial_done")


def signed_by_twilio(token: str, url: str, form: Mapping[str, str], signature: str) -> bool:
    """Whether `signature` is Twilio's for this URL and form, computed once for a genuine request.

    Twilio signs the URL as it was configured, with or without an explicit port
    (`RequestValidator.validate` accepts either and so computes both every time); the URL as
    configured is tried first, and the other form only when that does not match.
    """
    if not signature:
        return False
    validator = RequestValidator(token)
    if compare(validator.compute_signature(url, form), signature):
        return True
    parsed = urlparse(url)
    other = remove_port(parsed) if parsed.port else add_port(parsed)
    return other != url and compare(validator.compute_signature(other, form), signature)


@bp.before_request
def _require_twilio_signature() -> Response | None:
    """403 before anything happens unless Twilio signed exactly this public URL and form."""
    services = current_services()
    query = request.query_string.decode()
    url = services.settings.public_url.rstrip("/") + request.path + (f"?{query}" if query else "")
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signed_by_twilio(services.secrets.twilio_auth_token, url, request.form, signature):
        log.warning("rejected %s: missing or invalid X-Twilio-Signature", request.path)
        return Response("Invalid Twilio signature\n", status=403, mimetype="text/plain")
    return None


@bp.errorhandler(Exception)
def _safe_twiml(error: Exception) -> Response:
    """Whatever broke, the caller hears an apology instead of Twilio's canned error."""
    if isinstance(error, HTTPException):
        return Response(error.description or "", status=error.code or 500, mimetype="text/plain")
    if isinstance(error, RequestValidationError):  # refused before the signature was checked
        response = jsonify({"detail": error.errors})
        response.status_code = 422
        return response
    log.error("twilio webhook %s failed: %s", request.path, type(error).__name__, exc_info=error)
    call = _call(request.form.get("CallSid", ""))
    return _twiml(call, call.error())


def _call(call_sid: str | None = None) -> Call:
    """The call this request is a webhook of; a request without a CallSid is refused."""
    if call_sid is None:
        call_sid = request.form.get("CallSid", "")
        if not call_sid:
            raise ValueError("webhook without CallSid")
    services = current_services()
    return Call(services, PublicUrls(services.settings.public_url), call_sid, request.form)


def _twiml(call: Call, xml: str) -> Response:
    response = Response(xml, mimetype="text/xml")
    if call.session_status:
        response.headers[STATUS_HEADER] = call.session_status
    return response


@bp.post("/voice")
def voice() -> Response:
    call = _call()
    return _twiml(call, call.voice())


@bp.post("/gather")
def gather() -> Response:
    call = _call()
    return _twiml(call, call.gather(request.args.get("step")))


@bp.post("/result")
def result() -> Response:
    call = _call()
    return _twiml(call, call.result())


@bp.post("/dial")
def dial_done() -> Response:
    call = _call()
    return _twiml(call, call.dial_done())


@bp.post("/status")
def call_status() -> Response:
    _call().status()
    return Response("", status=200, mimetype="text/plain")


@bp.post("/fallback")
def fallback() -> Response:
    call = _call()
    return _twiml(call, call.fallback())
