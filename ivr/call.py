"""One Twilio webhook of one call: binding, the flow, call state and TwiML, without HTTP.

`api/voice.py` checks Twilio's signature, builds a `Call` from the request (the CallSid and the
form) and a `Urls` that says where Twilio comes back, and returns what a method gives: the TwiML
as text, with `session_status` set to the bound session's status for the `X-Paydial-Status`
header (`paydial call` reads it; Twilio ignores it).

Card digits reach this module only inside the flow's state, which lives in call state (sealed,
short TTL); nothing here logs form values.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Protocol

from redis.exceptions import RedisError
from sqlalchemy.orm import Session as Tx

from ivr import flow
from ivr.binding import (
    CallParams,
    bind_by_access_code,
    bind_call,
    ended_session_for,
    find_by_access_code,
    record_transfer,
    session_for_call,
)
from ivr.callstate import CallServices, CallStates, HandBack, LiveCall
from ivr.charge import HoldPoll, attempt_result, start_payment
from ivr.hangup import call_ended
from ivr.prompts import DEFAULT_LANGUAGE, catalog
from ivr.speech import announced_merchant
from ivr.transfer import PROCESSING, Transfer, transfer_for
from ivr.twiml import render_twiml
from payments import logs, velocity
from payments.crypto import DecryptionError
from payments.model import PaymentMode, Status
from payments.project_settings import project_settings
from payments.services import PaymentJob
from payments.sessions import load_session, payment_in_flight, transition
from payments.store import PaymentSession, Project

log = logging.getLogger(__name__)

ENDED_CALL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
GATHER_TEMPLATES = frozenset(s.value for s in flow.Step) - {flow.Step.PROCESSING, flow.Step.DONE}
FLOW_FAILED_MESSAGE = "The card details could not be collected on the call."
# A flow that failed for a reason of its own, before any payment attempt recorded an error.
FLOW_FAILED_MESSAGES = {
    flow.VELOCITY_LIMITED: velocity.CallerLockedOut.message,
    flow.NO_INPUT: "The caller did not key any card details.",
}
# Seconds between result polls, when a poll does not wait for news itself
# (Settings.hold_wait_seconds): the caller hears the outcome within a second of the gateway's
# answer, and flow.MAX_HOLD_POLLS of these (plus the reminders) bound the hold near a minute.
HOLD_PAUSE_SECONDS = 1


class Urls(Protocol):
    """Where Twilio comes back: absolute URLs on the public base it signs."""

    def gather(self, step: str) -> str: ...

    def result(self) -> str: ...

    def dial_done(self) -> str: ...


class Call:
    """One webhook of the call `call_sid`; `form` is Twilio's form-encoded parameters."""

    def __init__(
        self, services: CallServices, urls: Urls, call_sid: str, form: Mapping[str, str]
    ) -> None:
        self.services = services
        self.urls = urls
        self.call_sid = call_sid
        self.form = form
        self.caller = form.get("From", "")
        self.session_status: str | None = None
        self.poll: HoldPoll | None = None  # what this webhook's hold poll read, if it read
        self.hold_pause = HOLD_PAUSE_SECONDS  # before the next hold poll; 0 after a wait here
        # The bound session's context this webhook used; sealed with the call's next state.
        self.context: flow.FlowContext | None = None

    @property
    def calls(self) -> CallStates:
        return self.services.callstates

    def voice(self) -> str:
        """A new call: bind it to a session or ask for the access code."""
        services, call_sid = self.services, self.call_sid
        live = self.calls.load(call_sid)
        if live is not None:  # Twilio repeated the voice webhook: say the current thing again
            return self._replay(live)
        call = CallParams(
            call_sid=call_sid,
            to=self.form.get("To", ""),
            sip_header=self.form.get("SipHeader_X-Paydial-Session", ""),
            caller=self.caller,
        )
        with services.db.transaction() as tx:
            binding = bind_call(tx, call, now=services.clock())
            session = binding.session
            if session is None:  # the call names a session that already ended: say so, hand back
                ended = ended_session_for(tx, call, now=services.clock())
                context = self._context(tx, ended) if ended is not None else None
                hand_back = None
            else:
                context = self._greeting_context(tx, session, call.caller)
                hand_back = self._hand_back(session, context.language)
        if hand_back is not None:
            self.calls.put_hand_back(call_sid, hand_back)
        if context is not None:
            return self._carry_out(flow.greet(context))
        why = flow.AMBIGUOUS_CALLER_ID if binding.ambiguous_caller_id else None
        return self._carry_out(flow.ask_access_code(DEFAULT_LANGUAGE, why=why))

    def gather(self, step: str | None) -> str:
        """A <Gather> action; `step` names the step it asked for."""
        live = self.calls.load(self.call_sid)
        if live is None:
            return self.error()
        state = live.state
        event = flow.parse_gather(
            self.form.get("Digits", ""), self.form.get("FinishedOnKey", ""), step
        )
        if state.session_id is None:
            turn = flow.enter_access_code(state, event, self._lookup_access_code, DEFAULT_LANGUAGE)
        else:
            turn = flow.advance(state, event, self._live_context(live, state.session_id))
        return self._carry_out(turn)

    def result(self) -> str:
        """The hold <Redirect> while the gateway job runs."""
        live = self.calls.load(self.call_sid)
        if live is None:
            return self.error()
        state = live.state
        if state.session_id is None or state.step is not flow.Step.PROCESSING:
            return self._replay(live)
        sealed = live.sealed(self.services.clock().date())
        if sealed is not None and not _worth_reading(live):
            waited = self._wait_for_news(live)  # the job writes notes, never the state
            if waited is None:  # the caller hung up meanwhile
                return self.error()
            if not _worth_reading(waited):  # still with its job: nothing new
                pending = flow.PaymentPending()
                return self._carry_out(flow.advance(state, pending, self._use(sealed)))
        poll = self.poll = attempt_result(self.services, state.session_id, state.attempt)
        if sealed is None:
            context = self._load_context(state.session_id)
        else:  # the poll has just read the session: it says how the session stands
            context = self._use(_as_of(sealed, poll.status, poll.attempt_count))
        event = poll.answer if poll.answer is not None else flow.PaymentPending()
        return self._carry_out(flow.advance(state, event, context))

    def _wait_for_news(self, live: LiveCall) -> LiveCall | None:
        """Wait, up to `hold_wait_seconds`, for the job's answer or the session's end, so the
        caller hears it now rather than after Twilio's next pause; the call as it then stands.
        A poll that waited asks Twilio for no pause before the next one; with no waiter free in
        this process, it waits for nothing and Twilio pauses as before."""
        deadline = time.monotonic() + self.services.settings.hold_wait_seconds
        while (left := deadline - time.monotonic()) > 0:
            news = self.calls.wait_for_news(self.call_sid, left)
            if news is None:
                break
            self.hold_pause = 0
            if not news:
                break
            found = self.calls.load(self.call_sid)
            if found is None or _worth_reading(found):
                return found
            live = found  # a note for an earlier attempt: wait on
        return live

    def dial_done(self) -> str:
        """The transfer back ended; keep how it went."""
        services = self.services
        dial_status = self.form.get("DialCallStatus", "")[:24] or None
        self.session_status = record_transfer(
            services.db, self.call_sid, dial_status, now=services.clock()
        )
        language = catalog(DEFAULT_LANGUAGE)
        return render_twiml("goodbye", say=(), language=language.language, voice=language.voice)

    def status(self) -> None:
        """Status callback: once the call is over, its card state goes and its session closes."""
        if self.form.get("CallStatus", "") in ENDED_CALL_STATUSES:
            call_ended(self.services, self.call_sid)  # with a store down, its sweep finishes

    def fallback(self) -> str:
        """Twilio could not use our answer (ErrorCode, ErrorUrl): apologise and hand back."""
        state = self.calls.get(self.call_sid)
        logs.session_id_var.set(state.session_id if state is not None else None)
        log.warning(
            "twilio fallback for call %s: error %s at %s",
            self.call_sid,
            self.form.get("ErrorCode", "?"),
            self.form.get("ErrorUrl", "?"),
        )
        return self.error()

    def _context(self, tx: Tx, session: PaymentSession) -> flow.FlowContext:
        """The session as the flow sees it, with the project's settings applied."""
        project = tx.get_one(Project, session.project_id)
        settings = project_settings(project)
        context = flow.FlowContext(
            session_id=session.id,
            merchant=announced_merchant(settings, project.slug),
            amount_cents=session.amount_cents,
            currency=session.currency,
            mode=PaymentMode(session.mode),
            today=self.services.clock().date(),
            language=session.language or settings.language,
            description=session.description or "",
            require_postal_code=settings.require_postal_code,
            accepted_brands=frozenset(settings.accepted_brands),
            max_attempts=settings.max_payment_attempts,
            has_callback=bool(session.callback),
        )
        return self._use(_as_of(context, Status(session.status), session.attempt_count))

    def _use(self, context: flow.FlowContext) -> flow.FlowContext:
        """This webhook goes on with `context`: its reply and its log lines name the session."""
        self.context = context
        self.session_status = context.status.value
        logs.session_id_var.set(context.session_id)
        return context

    def _live_context(self, live: LiveCall, session_id: str) -> flow.FlowContext:
        """The context sealed at binding; the session is read again only when it ended since
        (or the state was sealed without one)."""
        sealed = live.context(self.services.clock().date())
        return self._use(sealed) if sealed is not None else self._load_context(session_id)

    def _greeting_context(self, tx: Tx, session: PaymentSession, caller: str) -> flow.FlowContext:
        """The context for greeting a newly bound call, which says whether its caller is locked out.

        Failures are counted against the session's caller; the number calling (Twilio's `From`) is
        checked too, so a locked-out number cannot pay for someone else's session.
        """
        services = self.services
        wait = velocity.caller_lockout(tx, services, [caller, session.caller], now=services.clock())
        return replace(self._context(tx, session), caller_locked_out=wait is not None)

    def _load_context(self, session_id: str) -> flow.FlowContext:
        services = self.services
        with services.db.transaction() as tx:
            return self._context(tx, load_session(tx, session_id, now=services.clock()))

    def _lookup_access_code(self, code: str) -> flow.FlowContext | None:
        services = self.services
        with services.db.transaction() as tx:
            session = find_by_access_code(tx, code, call_sid=self.call_sid, now=services.clock())
            return self._greeting_context(tx, session, self.caller) if session is not None else None

    def _replay(self, live: LiveCall) -> str:
        """The current prompt again, for a webhook Twilio delivered more than once."""
        state = live.state
        if state.session_id is None:
            turn = replace(flow.ask_access_code(DEFAULT_LANGUAGE), state=state)
        else:
            context = self._live_context(live, state.session_id)
            turn = flow.advance(state, flow.PaymentPending(), context)
        return self._carry_out(turn)

    def _carry_out(self, turn: flow.Turn) -> str:
        """Do the turn's actions in a safe order, keep its state, and render its reply."""
        services, call_sid = self.services, self.call_sid
        calls = self.calls
        session_id = turn.state.session_id
        for action in turn.actions:
            if isinstance(action, flow.Bind):
                with services.db.transaction() as tx:
                    bound = bind_by_access_code(
                        tx, action.session_id, call_sid=call_sid, now=services.clock()
                    )
                    if bound is None:  # bound to another call between lookup and now
                        return self.error()
                    language = self.context.language if self.context else DEFAULT_LANGUAGE
                    hand_back = self._hand_back(bound, language)
                calls.put_hand_back(call_sid, hand_back)
        finish = turn.finish
        if finish is None:
            calls.put(call_sid, turn.state, context=self.context if session_id else None)
        for action in turn.actions:
            if isinstance(action, flow.StartPayment) and session_id is not None:
                start_payment(
                    services, PaymentJob(session_id, action.attempt, call_sid), action.card
                )
        if finish is not None:
            if finish.outcome is flow.Outcome.UNRESOLVED:  # the card waits for its job
                calls.close(call_sid)
            else:
                calls.delete(call_sid)
            transfer = self._finish(session_id, finish) if session_id is not None else None
            return self._render(turn.reply, transfer)
        return self._render(turn.reply, None)

    def _finish(self, session_id: str, finish: flow.Finish) -> Transfer | None:
        """Record how the flow ended and work out where the caller goes next."""
        services = self.services
        poll = self.poll
        if poll is not None and poll.status.is_terminal:  # read just now, and final: no record
            self.session_status = poll.status.value
            return transfer_for(
                poll.callback,
                session_id=session_id,
                status=poll.status.value,
                memory=poll.memory,
                secret_key=services.secrets.secret_key,
            )
        now = services.clock()
        with services.db.transaction() as tx:
            session = load_session(tx, session_id, now=now, for_update=True)
            if finish.outcome is flow.Outcome.FAILED and not Status(session.status).is_terminal:
                if session.error_code is None:
                    session.error_code = finish.reason.replace("-", "_")
                    session.error_message = FLOW_FAILED_MESSAGES.get(
                        finish.reason, FLOW_FAILED_MESSAGE
                    )
                transition(
                    tx,
                    session,
                    Status.PAYMENT_FAILED,
                    cause="call_flow_failed",
                    now=now,
                    detail={"reason": finish.reason},
                )
            running = finish.outcome is flow.Outcome.UNRESOLVED
            if running and not Status(session.status).is_terminal:  # its job decides, and tells
                self.session_status = PROCESSING
                return self._transfer(session, PROCESSING)
            self.session_status = session.status
            return self._transfer(session)

    def _transfer(self, session: PaymentSession, status: str | None = None) -> Transfer | None:
        return transfer_for(
            session.callback,
            session_id=session.id,
            status=status or session.status,
            memory=session.memory,
            secret_key=self.services.secrets.secret_key,
        )

    def _render(self, reply: flow.CallReply, transfer: Transfer | None) -> str:
        context = reply.context()
        if reply.template in GATHER_TEMPLATES:
            context["action_url"] = self.urls.gather(reply.template)
            return render_twiml(reply.template, **context)
        if reply.template == "hold":
            return render_twiml(
                "hold", **context, redirect_url=self.urls.result(), pause=self.hold_pause
            )
        if transfer is not None:
            template = "dial_number" if transfer.number else "dial_sip"
            return render_twiml(
                template,
                **context,
                **transfer.template_context(),
                dial_action_url=self.urls.dial_done(),
            )
        return render_twiml(reply.template, **context)

    def _hand_back(self, session: PaymentSession, language: str) -> HandBack:
        """Where a newly bound call's caller goes back to, kept in call state (see `error`)."""
        charging = self._transfer(session, PROCESSING)
        return HandBack(language, self._transfer(session), charging)

    def _kept_hand_back(self) -> tuple[HandBack | None, bool]:
        """The hand-back kept in call state, and whether the call was holding for a charge."""
        if not self.call_sid:
            return None, False
        try:
            calls = self.calls
            kept, state = calls.hand_back(self.call_sid), calls.get(self.call_sid)
            holding = state is not None and state.step is flow.Step.PROCESSING
            # Taking the card back settles it: a card the job has not taken yet is never charged.
            charging = holding and calls.take_card(self.call_sid) is None
        except (RedisError, DecryptionError) as error:
            log.error("call state unreachable for the hand-back: %s", type(error).__name__)
            return None, False
        return kept, charging

    def _forget_card_state(self) -> None:
        """Destroy the call's state; with Redis down it is out of reach, and expires there. A flow
        that had already ended (a webhook Twilio repeats after the hold limit) leaves a card it
        handed to its payment job to that job."""
        try:
            calls = self.calls
            if calls.is_live(self.call_sid):
                calls.delete(self.call_sid)
            else:
                calls.close(self.call_sid)
        except RedisError as error:
            log.error("call state unreachable while ending a failed call: %s", type(error).__name__)

    def error(self) -> str:
        """Apologise; transfer back when the call's session has a callback, else hang up.

        The flow failed, so the call's card state is destroyed first. The session says where the
        caller goes; when the database cannot be read, the hand-back kept in call state since
        binding does (with Redis down instead, the database still knows). Either way a charge
        still with the gateway goes back as `X-Paydial-Status=processing`: the agent polls for its
        result.
        """
        services, call_sid = self.services, self.call_sid
        kept, charging = self._kept_hand_back()
        transfer = (kept.charging if charging else kept.transfer) if kept else None
        language = kept.language if kept else DEFAULT_LANGUAGE
        try:
            if call_sid:
                self._forget_card_state()
                with services.db.transaction() as tx:
                    session = session_for_call(tx, call_sid, now=services.clock())
                    if session is not None:
                        language = self._context(tx, session).language
                        charging = payment_in_flight(tx, session.id)
                        transfer = self._transfer(session, PROCESSING if charging else None)
        except Exception as error:  # the apology must go out even when storage is down
            log.error("could not look up the call for an error reply: %s", type(error).__name__)
        if charging:
            self.session_status = PROCESSING
        context = flow.error_reply(language).context()
        if transfer is not None:
            context.update(transfer.template_context(), dial_action_url=self.urls.dial_done())
        return render_twiml("error", **context)


def _worth_reading(live: LiveCall) -> bool:
    """Whether a hold poll may find something new in the database: the attempt's job has
    answered, the session ended since, or the hold is at its limit (a last look, in case the
    job's note was lost)."""
    state = live.state
    return (
        live.answered == state.attempt
        or live.session_ended
        or state.polls + 1 >= flow.MAX_HOLD_POLLS
    )


def _as_of(context: flow.FlowContext, status: Status, attempt_count: int) -> flow.FlowContext:
    """The context with the session's status as just read; a session that already ended (e.g. an
    unknown gateway outcome) offers no more tries than it had."""
    max_attempts = attempt_count if status.is_terminal else context.max_attempts
    return replace(context, status=status, max_attempts=max_attempts)
