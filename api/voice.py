"""Blueprint: Twilio's voice and SIP webhooks (signature-checked) -> binding and flow -> TwiML.

Routes (all POST, form-encoded, `X-Twilio-Signature` checked against PAYDIAL_PUBLIC_URL):

    /twilio/voice     a new call: bind it to a session or ask for the access code
    /twilio/gather    a <Gather> action (`?step=` names the step it asked for)
    /twilio/result    the hold <Redirect> while the gateway job runs
    /twilio/dial      the <Dial action> after the transfer back: records transfer_status
    /twilio/status    the call status callback: a call that ended abandons its open session
    /twilio/fallback  Twilio's fallback URL: apologise, transfer back or hang up

Card digits reach this module only inside the flow's state, which lives in call state (sealed,
short TTL); nothing here logs form values. TwiML responses carry `X-Paydial-Status` (the bound
session's status) for `paydial call`; Twilio ignores it.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from flask import Blueprint, Response, g, request, url_for
from redis.exceptions import RedisError
from sqlalchemy.orm import Session as Tx
from twilio.request_validator import RequestValidator
from werkzeug.exceptions import HTTPException

from api.extension import current_services
from ivr import flow
from ivr.binding import (
    CallParams,
    bind_by_access_code,
    bind_call,
    ended_session_for,
    find_by_access_code,
    session_for_call,
)
from ivr.callstate import HandBack
from ivr.charge import attempt_result, callstates_of, start_payment
from ivr.hangup import call_ended
from ivr.prompts import DEFAULT_LANGUAGE, catalog
from ivr.speech import announced_merchant
from ivr.transfer import PROCESSING, Transfer, transfer_for
from ivr.twiml import render_twiml
from payments import velocity
from payments.crypto import DecryptionError
from payments.model import PaymentMode, Status
from payments.project_settings import project_settings
from payments.services import PaymentJob, Services
from payments.sessions import load_session, payment_in_flight, transition
from payments.store import PaymentSession, Project

log = logging.getLogger(__name__)

bp = Blueprint("twilio", __name__, url_prefix="/twilio")

ENDED_CALL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
GATHER_TEMPLATES = frozenset(s.value for s in flow.Step) - {flow.Step.PROCESSING, flow.Step.DONE}
STATUS_HEADER = "X-Paydial-Status"
FLOW_FAILED_MESSAGE = "The card details could not be collected on the call."
# A flow that failed for a reason of its own, before any payment attempt recorded an error.
FLOW_FAILED_MESSAGES = {
    flow.VELOCITY_LIMITED: velocity.CallerLockedOut.message,
    flow.NO_INPUT: "The caller did not key any card details.",
}
# Seconds between result polls: the caller hears the outcome within a second of the gateway's
# answer, and flow.MAX_HOLD_POLLS of these (plus the reminders) bound the hold near a minute.
HOLD_PAUSE_SECONDS = 1


# --- the edge: signatures, responses, errors ---------------------------------------------------


def public_url(endpoint: str, **values: Any) -> str:
    """An absolute URL on PAYDIAL_PUBLIC_URL, the base Twilio calls and signs with."""
    base = current_services().settings.public_url.rstrip("/")
    return base + url_for(endpoint, **values)


@bp.before_request
def _require_twilio_signature() -> Response | None:
    """403 before anything happens unless Twilio signed exactly this public URL and form."""
    services = current_services()
    query = request.query_string.decode()
    url = services.settings.public_url.rstrip("/") + request.path + (f"?{query}" if query else "")
    signature = request.headers.get("X-Twilio-Signature", "")
    token = services.secrets.twilio_auth_token
    if not signature or not RequestValidator(token).validate(url, request.form, signature):
        log.warning("rejected %s: missing or invalid X-Twilio-Signature", request.path)
        return Response("Invalid Twilio signature\n", status=403, mimetype="text/plain")
    return None


@bp.after_request
def _status_header(response: Response) -> Response:
    status = g.get("session_status")
    if status:
        response.headers[STATUS_HEADER] = status
    return response


@bp.errorhandler(Exception)
def _safe_twiml(error: Exception) -> Response:
    """Whatever broke, the caller hears an apology instead of Twilio's canned error."""
    if isinstance(error, HTTPException):
        return Response(error.description or "", status=error.code or 500, mimetype="text/plain")
    log.error("twilio webhook %s failed: %s", request.path, type(error).__name__, exc_info=error)
    return _error_twiml(request.form.get("CallSid", ""))


def _twiml(xml: str) -> Response:
    return Response(xml, mimetype="text/xml")


def _call_sid() -> str:
    call_sid = request.form.get("CallSid", "")
    if not call_sid:
        raise ValueError("webhook without CallSid")
    return call_sid


# --- routes ------------------------------------------------------------------------------------


@bp.post("/voice")
def voice() -> Response:
    call_sid = _call_sid()
    services = current_services()
    state = callstates_of(services).get(call_sid)
    if state is not None:  # Twilio repeated the voice webhook: say the current thing again
        return _replay(call_sid, state)
    form = request.form
    call = CallParams(
        call_sid=call_sid,
        to=form.get("To", ""),
        sip_header=form.get("SipHeader_X-Paydial-Session", ""),
        caller=form.get("From", ""),
    )
    with services.db.transaction() as tx:
        binding = bind_call(tx, call, now=services.clock())
        session = binding.session
        if session is None:  # the call names a session that already ended: say so, hand back
            ended = ended_session_for(tx, call, now=services.clock())
            context = _context(tx, ended) if ended is not None else None
            hand_back = None
        else:
            context = _greeting_context(tx, session, call.caller)
            hand_back = _hand_back(tx, session)
    if hand_back is not None:
        callstates_of(services).put_hand_back(call_sid, hand_back)
    if context is not None:
        return _carry_out(call_sid, flow.greet(context))
    why = flow.AMBIGUOUS_CALLER_ID if binding.ambiguous_caller_id else None
    return _carry_out(call_sid, flow.ask_access_code(DEFAULT_LANGUAGE, why=why))


@bp.post("/gather")
def gather() -> Response:
    call_sid = _call_sid()
    services = current_services()
    state = callstates_of(services).get(call_sid)
    if state is None:
        return _error_twiml(call_sid)
    event = flow.parse_gather(
        request.form.get("Digits", ""),
        request.form.get("FinishedOnKey", ""),
        request.args.get("step"),
    )
    if state.session_id is None:
        turn = flow.enter_access_code(
            state, event, lambda code: _lookup_access_code(code, call_sid), DEFAULT_LANGUAGE
        )
    else:
        turn = flow.advance(state, event, _load_context(state.session_id))
    return _carry_out(call_sid, turn)


@bp.post("/result")
def result() -> Response:
    call_sid = _call_sid()
    services = current_services()
    state = callstates_of(services).get(call_sid)
    if state is None:
        return _error_twiml(call_sid)
    if state.session_id is None or state.step is not flow.Step.PROCESSING:
        return _replay(call_sid, state)
    answer = attempt_result(services, state.session_id, state.attempt)
    event = answer if answer is not None else flow.PaymentPending()
    return _carry_out(call_sid, flow.advance(state, event, _load_context(state.session_id)))


@bp.post("/dial")
def dial_done() -> Response:
    """The transfer back ended; keep how it went."""
    services = current_services()
    with services.db.transaction() as tx:
        session = session_for_call(tx, _call_sid(), now=services.clock())
        if session is not None:
            session.transfer_status = request.form.get("DialCallStatus", "")[:24] or None
            session.updated_at = services.clock()
            g.session_status = session.status
    language = catalog(DEFAULT_LANGUAGE)
    return _twiml(render_twiml("goodbye", say=(), language=language.language, voice=language.voice))


@bp.post("/status")
def call_status() -> Response:
    """Call status callback: when the call is over, its card state goes and its session closes."""
    call_sid = _call_sid()
    if request.form.get("CallStatus", "") in ENDED_CALL_STATUSES:
        call_ended(current_services(), call_sid)  # with a store down, its sweep finishes the job
    return Response("", status=200, mimetype="text/plain")


@bp.post("/fallback")
def fallback() -> Response:
    """Twilio could not use our answer (ErrorCode, ErrorUrl): apologise, hand the caller back."""
    call_sid = _call_sid()
    log.warning(
        "twilio fallback for call %s: error %s at %s",
        call_sid,
        request.form.get("ErrorCode", "?"),
        request.form.get("ErrorUrl", "?"),
    )
    return _error_twiml(call_sid)


# --- driving the flow --------------------------------------------------------------------------


def _context(tx: Tx, session: PaymentSession) -> flow.FlowContext:
    """The session as the flow sees it, with the project's settings applied."""
    project = tx.get_one(Project, session.project_id)
    settings = project_settings(project)
    terminal = Status(session.status).is_terminal
    g.session_status = session.status
    return flow.FlowContext(
        session_id=session.id,
        merchant=announced_merchant(settings, project.slug),
        amount_cents=session.amount_cents,
        currency=session.currency,
        mode=PaymentMode(session.mode),
        today=current_services().clock().date(),
        language=session.language or settings.language,
        description=session.description or "",
        require_postal_code=settings.require_postal_code,
        accepted_brands=frozenset(settings.accepted_brands),
        # a session that already ended (e.g. an unknown gateway outcome) offers no more tries
        max_attempts=session.attempt_count if terminal else settings.max_payment_attempts,
        has_callback=bool(session.callback),
        status=Status(session.status),
    )


def _greeting_context(tx: Tx, session: PaymentSession, caller: str) -> flow.FlowContext:
    """The context for greeting a newly bound call, which says whether its caller is locked out.

    Failures are counted against the session's caller; the number calling (Twilio's `From`) is
    checked too, so a locked-out number cannot pay for someone else's session.
    """
    services = current_services()
    wait = velocity.caller_lockout(tx, services, [caller, session.caller], now=services.clock())
    return replace(_context(tx, session), caller_locked_out=wait is not None)


def _load_context(session_id: str) -> flow.FlowContext:
    services = current_services()
    with services.db.transaction() as tx:
        return _context(tx, load_session(tx, session_id, now=services.clock()))


def _lookup_access_code(code: str, call_sid: str) -> flow.FlowContext | None:
    services = current_services()
    caller = request.form.get("From", "")
    with services.db.transaction() as tx:
        session = find_by_access_code(tx, code, call_sid=call_sid, now=services.clock())
        return _greeting_context(tx, session, caller) if session is not None else None


def _replay(call_sid: str, state: flow.CallState) -> Response:
    """The current prompt again, for a webhook Twilio delivered more than once."""
    if state.session_id is None:
        turn = replace(flow.ask_access_code(DEFAULT_LANGUAGE), state=state)
    else:
        turn = flow.advance(state, flow.PaymentPending(), _load_context(state.session_id))
    return _carry_out(call_sid, turn)


def _carry_out(call_sid: str, turn: flow.Turn) -> Response:
    """Do the turn's actions in a safe order, keep its state, and render its reply."""
    services = current_services()
    calls = callstates_of(services)
    session_id = turn.state.session_id
    for action in turn.actions:
        if isinstance(action, flow.Bind):
            with services.db.transaction() as tx:
                bound = bind_by_access_code(
                    tx, action.session_id, call_sid=call_sid, now=services.clock()
                )
                if bound is None:  # bound to another call between lookup and now
                    return _error_twiml(call_sid)
                hand_back = _hand_back(tx, bound)
            calls.put_hand_back(call_sid, hand_back)
    finish = turn.finish
    if finish is None:
        calls.put(call_sid, turn.state)
    for action in turn.actions:
        if isinstance(action, flow.StartPayment) and session_id is not None:
            start_payment(services, PaymentJob(session_id, action.attempt, call_sid), action.card)
    if finish is not None:
        calls.delete(call_sid)
        transfer = _finish(session_id, finish) if session_id is not None else None
        return _render(turn.reply, transfer)
    return _render(turn.reply, None)


def _finish(session_id: str, finish: flow.Finish) -> Transfer | None:
    """Record how the flow ended and work out where the caller goes next."""
    services = current_services()
    now = services.clock()
    with services.db.transaction() as tx:
        session = load_session(tx, session_id, now=now, for_update=True)
        if finish.outcome is flow.Outcome.FAILED and not Status(session.status).is_terminal:
            if session.error_code is None:
                session.error_code = finish.reason.replace("-", "_")
                session.error_message = FLOW_FAILED_MESSAGES.get(finish.reason, FLOW_FAILED_MESSAGE)
            transition(
                tx,
                session,
                Status.PAYMENT_FAILED,
                cause="call_flow_failed",
                now=now,
                detail={"reason": finish.reason},
            )
        g.session_status = session.status
        return _transfer(session)


def _transfer(session: PaymentSession, status: str | None = None) -> Transfer | None:
    return transfer_for(
        session.callback,
        session_id=session.id,
        status=status or session.status,
        memory=session.memory,
        secret_key=current_services().secrets.secret_key,
    )


def _render(reply: flow.CallReply, transfer: Transfer | None) -> Response:
    context = reply.context()
    if reply.template in GATHER_TEMPLATES:
        context["action_url"] = public_url("twilio.gather", step=reply.template)
        return _twiml(render_twiml(reply.template, **context))
    if reply.template == "hold":
        return _twiml(
            render_twiml(
                "hold",
                **context,
                redirect_url=public_url("twilio.result"),
                pause=HOLD_PAUSE_SECONDS,
            )
        )
    if transfer is not None:
        template = "dial_number" if transfer.number else "dial_sip"
        return _twiml(
            render_twiml(
                template,
                **context,
                **transfer.template_context(),
                dial_action_url=public_url("twilio.dial_done"),
            )
        )
    return _twiml(render_twiml(reply.template, **context))


def _hand_back(tx: Tx, session: PaymentSession) -> HandBack:
    """Where a newly bound call's caller goes back to, kept in call state (see _error_twiml)."""
    charging = _transfer(session, PROCESSING)
    return HandBack(_context(tx, session).language, _transfer(session), charging)


def _kept_hand_back(services: Services, call_sid: str) -> tuple[HandBack | None, bool]:
    """The hand-back kept in call state, and whether the call was holding for a charge."""
    if not call_sid:
        return None, False
    try:
        calls = callstates_of(services)
        kept, state = calls.hand_back(call_sid), calls.get(call_sid)
        holding = state is not None and state.step is flow.Step.PROCESSING
        # Taking the card back settles it: a card the job has not taken yet is never charged.
        charging = holding and calls.take_card(call_sid) is None
    except (RedisError, DecryptionError) as error:
        log.error("call state unreachable for the hand-back: %s", type(error).__name__)
        return None, False
    return kept, charging


def _forget_card_state(services: Services, call_sid: str) -> None:
    """Destroy the call's state; when Redis itself is down it is out of reach, and expires there."""
    try:
        callstates_of(services).delete(call_sid)
    except RedisError as error:
        log.error("call state unreachable while ending a failed call: %s", type(error).__name__)


def _error_twiml(call_sid: str) -> Response:
    """Apologise; transfer back when the call's session has a callback, else hang up.

    The flow failed, so the call's card state is destroyed first. The session says where the
    caller goes; when the database cannot be read, the hand-back kept in call state since binding
    does (with Redis down instead, the database still knows). Either way a charge still with the
    gateway goes back as `X-Paydial-Status=processing`: the agent polls for its result.
    """
    services = current_services()
    kept, charging = _kept_hand_back(services, call_sid)
    transfer = (kept.charging if charging else kept.transfer) if kept else None
    language = kept.language if kept else DEFAULT_LANGUAGE
    try:
        if call_sid:
            _forget_card_state(services, call_sid)
            with services.db.transaction() as tx:
                session = session_for_call(tx, call_sid, now=services.clock())
                if session is not None:
                    language = _context(tx, session).language
                    charging = payment_in_flight(tx, session.id)
                    transfer = _transfer(session, PROCESSING if charging else None)
    except Exception as error:  # the apology must go out even when storage is down
        log.error("could not look up the call for an error reply: %s", type(error).__name__)
    if charging:
        g.session_status = PROCESSING
    context = flow.error_reply(language).context()
    if transfer is not None:
        context.update(transfer.template_context(), dial_action_url=public_url("twilio.dial_done"))
    return _twiml(render_twiml("error", **context))
