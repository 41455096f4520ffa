"""The call as a pure state machine: ``(state, event, context) -> Turn``; no Flask, DB or I/O.

A ``Turn`` carries the next ``CallState`` (store it, sealed, with ``ivr.callstate``), the
``CallReply`` to render (``render_twiml(reply.template, **reply.context(), action_url=...)``)
and the ``actions`` the webhook layer must carry out. How ``api/voice.py`` drives it, per request:

1. A new call. Bound by SIP URI, SIP header or caller ID: ``greet(context)``. Otherwise
   ``ask_access_code(language)``, with ``why=AMBIGUOUS_CALLER_ID`` when caller ID matched
   several pending sessions. A greeting context says whether the caller is locked out
   (``payments.velocity``); a locked-out caller hears why and is handed back before any card entry.
2. A ``<Gather>`` action: ``event = parse_gather(Digits, FinishedOnKey, step)`` where ``step`` is
   the ``?step=`` the webhook put in the action URL (``turn.state.step``), so a delivery Twilio
   repeats after the flow moved on replays the current prompt instead of being read as input.
   While ``state.session_id`` is None: ``enter_access_code(state, event, lookup, language)``;
   ``lookup(code)`` returns the session's ``FlowContext`` or None. Then ``advance(state, event,
   context)``.
3. The hold ``<Redirect>`` (the result URL): ``GatewayAnswer(...)`` once the gateway answered,
   ``PaymentPending()`` before; ``advance(state, event, context)``.
4. Actions, in order:
   - ``Bind(session_id)``: the access code matched; bind the call (``collecting``, CallSid).
   - ``StartPayment(attempt, card)``: claim ``(session, attempt)`` once, hand the card to the
     gateway job (``CallStates.put_card``), enqueue; the reply is already the hold message.
   - ``Finish(outcome, reason)``: record the outcome, delete the call state, and render
     ``dial_number``/``dial_sip`` instead of ``reply.template`` (``goodbye``) when the session
     has a callback, passing ``reply.say`` along (it already ends with "transferring you back").
     ``UNRESOLVED`` (the caller held as long as they are asked to) leaves a card not yet taken
     to its payment job, which still runs the payment and tells the merchant the result.

Each entry gets ``MAX_TRIES`` tries (silence counts, ``*`` does not), then ``Finish(FAILED,
"too-many-failed-attempts")``, or ``Finish(FAILED, "no_input")`` when every try was silence. A
session that ended elsewhere (the merchant cancelled it, it expired or was abandoned) ends the
call at the next webhook with ``Finish(ENDED)``: the caller hears the truth, nothing is recorded.
Card digits live only in ``CallState.card`` until ``StartPayment`` moves them out; no ``repr``
here shows them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date
from enum import StrEnum
from typing import Any

from gateways.cards import BRANDS, Brand
from ivr.cards import (
    Reason,
    check_card_number,
    check_expiry,
    check_postal_code,
    check_security_code,
    detect_brand,
    parse_expiry,
    security_code_length,
)
from ivr.prompts import catalog
from ivr.speech import speak_amount, speak_code, speak_list, spell_number
from payments.model import PaymentMode, Status

MAX_TRIES = 3
MAX_HOLD_POLLS = 40  # with the hold template's pause, about two minutes before giving up waiting
HOLD_REMINDER_EVERY = 4  # polls between "still working on it" reminders
ACCESS_CODE_LENGTH = 6
# Said before asking for the code when caller ID matched several pending sessions (ivr.binding).
AMBIGUOUS_CALLER_ID = "access_code_ambiguous"
TOO_MANY_TRIES = "too-many-failed-attempts"  # Twilio <Pay> vocabulary
PAYMENT_PENDING = "payment-pending"
NO_INPUT = "no_input"  # the error code of a session whose caller never keyed an entry
VELOCITY_LIMITED = "velocity_limited"  # the error code of a payment the velocity limits refused


class Step(StrEnum):
    """Where the call is; a gathering step's value is also its TwiML template's name."""

    ACCESS_CODE = "access_code"
    CARD_NUMBER = "card_number"
    EXPIRY = "expiry"
    SECURITY_CODE = "security_code"
    POSTAL_CODE = "postal_code"
    CONFIRM = "confirm"
    PROCESSING = "processing"
    DECLINED = "declined"
    DONE = "done"


class Outcome(StrEnum):
    APPROVED = "approved"  # the gateway approved: record the payment
    FAILED = "failed"  # entries or attempts exhausted, gave up or locked out: payment-failed
    UNRESOLVED = "unresolved"  # no answer while the caller held; the job runs on and settles it
    UNBOUND = "unbound"  # no session matched the access code; nothing to record
    ENDED = "ended"  # the session ended elsewhere (cancelled, expired...); nothing to record


@dataclass(frozen=True)
class KeyedCard:
    """What the caller keyed; partial while entering. Radioactive: never shown by ``repr``."""

    number: str = field(default="", repr=False)
    expiry: str = field(default="", repr=False)  # MMYY
    security_code: str = field(default="", repr=False)
    postal_code: str = field(default="", repr=False)

    def __repr__(self) -> str:
        return f"KeyedCard(brand={self.brand})"

    @property
    def brand(self) -> Brand | None:
        return detect_brand(self.number)

    @property
    def last4(self) -> str:
        return self.number[-4:]

    @property
    def exp_month(self) -> int:
        return self._expiry()[0]

    @property
    def exp_year(self) -> int:
        return self._expiry()[1]

    def _expiry(self) -> tuple[int, int]:
        parsed = parse_expiry(self.expiry)
        if parsed is None:
            raise ValueError("card has no valid expiry")
        return parsed

    def to_dict(self) -> dict[str, str]:
        return {
            "number": self.number,
            "expiry": self.expiry,
            "security_code": self.security_code,
            "postal_code": self.postal_code,
        }

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> KeyedCard:
        return cls(**data)


@dataclass(frozen=True)
class CallState:
    """Everything the flow remembers between two webhooks; sealed by ``ivr.callstate``."""

    step: Step
    session_id: str | None = None
    tries: int = 0  # failed tries at the current step
    silences: int = 0  # of those, the ones where the caller keyed nothing
    attempt: int = 0  # payment attempts started
    polls: int = 0  # hold redirects during the current attempt
    decline_code: str = ""  # of the last declined attempt
    card: KeyedCard = field(default_factory=KeyedCard)

    def to_bytes(self, context: FlowContext | None = None) -> bytes:
        """What is sealed between webhooks: a bound call's context goes along (see FlowContext).
        Written out field by field: `dataclasses.asdict` deep-copies every value, a cost every
        gather paid."""
        data: dict[str, Any] = {
            "step": self.step.value,
            "session_id": self.session_id,
            "tries": self.tries,
            "silences": self.silences,
            "attempt": self.attempt,
            "polls": self.polls,
            "decline_code": self.decline_code,
            "card": self.card.to_dict(),
        }
        if context is not None:
            data["context"] = context.to_dict()
        return json.dumps(data).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> CallState:
        return cls.from_dict(json.loads(raw))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallState:
        return cls(
            step=Step(data["step"]),
            session_id=data["session_id"],
            tries=data["tries"],
            silences=data.get("silences", 0),  # state sealed before this field existed
            attempt=data["attempt"],
            polls=data["polls"],
            decline_code=data["decline_code"],
            card=KeyedCard.from_dict(data["card"]),
        )


@dataclass(frozen=True)
class FlowContext:
    """The bound session as the flow sees it.

    Built when the call binds and sealed with its state from then on (``to_dict``): what the
    merchant asked for does not change under a call. What does change comes fresh with every
    webhook: ``today``, and ``status`` when the session ended elsewhere (the webhook layer reads
    the session again then); ``caller_locked_out`` matters only for the greeting.
    """

    session_id: str
    merchant: str
    amount_cents: int
    currency: str
    mode: PaymentMode
    today: date
    language: str = "en-US"
    description: str = ""
    require_postal_code: bool = False
    accepted_brands: frozenset[Brand] = frozenset(Brand)
    max_attempts: int = 3
    has_callback: bool = False
    caller_locked_out: bool = False  # too many failures from this number: no card is taken
    status: Status = Status.COLLECTING  # the session's, as of this webhook

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "merchant": self.merchant,
            "amount_cents": self.amount_cents,
            "currency": self.currency,
            "mode": self.mode.value,
            "language": self.language,
            "description": self.description,
            "require_postal_code": self.require_postal_code,
            "accepted_brands": sorted(self.accepted_brands),
            "max_attempts": self.max_attempts,
            "has_callback": self.has_callback,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, today: date) -> FlowContext:
        """A sealed context on a bound call's later webhook: the session is still collecting."""
        brands = frozenset(Brand(brand) for brand in data["accepted_brands"])
        return cls(
            **{**data, "mode": PaymentMode(data["mode"]), "accepted_brands": brands}, today=today
        )


# Events ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """Digits keyed into a ``<Gather>`` (possibly none, when the caller pressed only ``#``)."""

    digits: str = field(repr=False)
    step: Step | None = None  # the step the Gather belonged to, when the action URL says


@dataclass(frozen=True)
class Silence:
    step: Step | None = None


@dataclass(frozen=True)
class Star:
    """The caller pressed ``*``: start the current entry again."""

    step: Step | None = None


@dataclass(frozen=True)
class PaymentPending:
    """The hold redirect came back before the gateway answered."""


@dataclass(frozen=True)
class GatewayAnswer:
    """The gateway answered. ``decline_code`` uses the gateway error tree's codes
    (``card_declined``, ``insufficient_funds``, ``incorrect_cvc``, ``expired_card``,
    ``incorrect_zip``, ``processing_error``); unknown codes get a generic sentence."""

    approved: bool
    confirmation: str = ""
    decline_code: str = ""


GatherEvent = Entry | Silence | Star
Event = GatherEvent | PaymentPending | GatewayAnswer


def parse_gather(digits: str, finished_on_key: str = "", step: str | None = None) -> GatherEvent:
    """Twilio's ``Digits``/``FinishedOnKey`` (and our ``?step=``) as a flow event.

    With ``finishOnKey="#"`` Twilio does not end a ``<Gather>`` on ``*``: the star arrives inside
    ``Digits`` once the caller presses ``#`` or stops keying for ``timeout`` seconds
    (https://www.twilio.com/docs/voice/twiml/gather#finishonkey: one key ends the input, the
    others are collected). So "press star to start again" means the entry is what follows the
    last ``*``; a ``*`` with nothing after it restarts the entry.
    """
    expected = Step(step) if step else None
    if "*" in digits:
        after_star = digits.rsplit("*", 1)[1]
        if not after_star:
            return Star(step=expected)
        return Entry(digits=after_star, step=expected)
    if not digits and not finished_on_key:
        return Silence(step=expected)
    return Entry(digits=digits, step=expected)


# Turns ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallReply:
    """What to render: a template name and the sentences to say, in the caller's language."""

    template: str
    say: tuple[str, ...]
    language: str
    voice: str

    def context(self) -> dict[str, object]:
        """Template variables; the webhook layer adds the URLs."""
        return {"say": self.say, "language": self.language, "voice": self.voice}


@dataclass(frozen=True)
class Bind:
    session_id: str


@dataclass(frozen=True)
class StartPayment:
    """Start the gateway call for ``attempt`` (1-based) with ``card``; at most once per attempt."""

    attempt: int
    card: KeyedCard


@dataclass(frozen=True)
class Finish:
    outcome: Outcome
    reason: str = ""  # Twilio <Pay> vocabulary or the gateway's decline code


Action = Bind | StartPayment | Finish


@dataclass(frozen=True)
class Turn:
    state: CallState
    reply: CallReply
    actions: tuple[Action, ...] = ()

    @property
    def finish(self) -> Finish | None:
        return next((a for a in self.actions if isinstance(a, Finish)), None)


AccessCodeLookup = Callable[[str], FlowContext | None]


@dataclass(frozen=True)
class _EntryRule:
    """How one keyed entry is checked and stored, and which step follows it."""

    field: str
    check: Callable[[str, KeyedCard, FlowContext], Reason | None]
    next: Step


_ENTRIES: dict[Step, _EntryRule] = {
    Step.CARD_NUMBER: _EntryRule(
        "number", lambda d, _card, ctx: check_card_number(d, ctx.accepted_brands), Step.EXPIRY
    ),
    Step.EXPIRY: _EntryRule(
        "expiry", lambda d, _card, ctx: check_expiry(d, ctx.today), Step.SECURITY_CODE
    ),
    Step.SECURITY_CODE: _EntryRule(
        "security_code", lambda d, card, _ctx: check_security_code(d, card.brand), Step.POSTAL_CODE
    ),
    Step.POSTAL_CODE: _EntryRule(
        "postal_code", lambda d, _card, _ctx: check_postal_code(d), Step.CONFIRM
    ),
}

# Single-key menus: key -> what it does.
_CONFIRM_PAY, _REENTER, _END = "pay", "reenter", "end"
_MENUS: dict[Step, dict[str, str]] = {
    Step.CONFIRM: {"1": _CONFIRM_PAY, "2": _REENTER},
    Step.DECLINED: {"1": _REENTER, "2": _END},
}

_TEMPLATES: dict[Step, str] = {Step.PROCESSING: "hold", Step.DONE: "goodbye"}
# Ended while the call went on. A payment result, in contrast, reaches the flow as an event, and
# a webhook Twilio repeats while the payment completes must replay the hold, not end the call.
_ENDED_ELSEWHERE = frozenset({Status.CANCELLED, Status.EXPIRED, Status.ABANDONED})


def _reply(step: Step, lines: list[str], language: str) -> CallReply:
    return CallReply(
        template=_TEMPLATES.get(step, step.value),
        say=tuple(lines),
        language=language,
        voice=catalog(language).voice,
    )


def ask_access_code(language: str, *, why: str | None = None) -> Turn:
    """An unbound call: ask for the session's 6-digit access code, saying `why` (a prompt key)."""
    text = catalog(language)
    lines = [text.say("welcome"), *([text.say(why)] if why else []), text.say("access_code")]
    return Turn(CallState(step=Step.ACCESS_CODE), _reply(Step.ACCESS_CODE, lines, language))


def enter_access_code(
    state: CallState, event: GatherEvent, lookup: AccessCodeLookup, language: str
) -> Turn:
    """Bind by access code; three misses end the call politely."""
    text = catalog(language)
    if isinstance(event, Entry) and event.step in (None, Step.ACCESS_CODE):
        found = lookup(event.digits) if len(event.digits) == ACCESS_CODE_LENGTH else None
        if found is not None:
            turn = greet(found)
            return replace(turn, actions=(Bind(found.session_id), *turn.actions))
        problem = [text.say("access_code_unknown")]
    elif isinstance(event, Silence) and event.step in (None, Step.ACCESS_CODE):
        problem = [text.say("silence")]
    else:  # `*` or a stale delivery: ask again, costs no try
        return replace(ask_access_code(language), state=state)
    tries = state.tries + 1
    if tries >= MAX_TRIES:
        lines = [*problem, text.say("access_code_failed"), text.say("goodbye")]
        return Turn(
            replace(state, step=Step.DONE, tries=tries),
            _reply(Step.DONE, lines, language),
            (Finish(Outcome.UNBOUND, TOO_MANY_TRIES),),
        )
    return Turn(
        replace(state, tries=tries),
        _reply(Step.ACCESS_CODE, [*problem, text.say("access_code")], language),
    )


def greet(ctx: FlowContext) -> Turn:
    """A bound call: who is asking for what, then the card number prompt (with the ``*`` hint,
    said once per call). A session that already ended, or a locked-out caller, hears why and goes
    back without being asked for a card."""
    text = catalog(ctx.language)
    state = CallState(step=Step.CARD_NUMBER, session_id=ctx.session_id)
    if ctx.status.is_terminal:
        return _ended(state, ctx)
    if ctx.caller_locked_out:
        finish = Finish(Outcome.FAILED, VELOCITY_LIMITED)
        return _finish(state, ctx, finish, [text.say("caller_locked_out")])
    amount = speak_amount(ctx.amount_cents, ctx.currency, ctx.language)
    if ctx.mode is PaymentMode.TOKENIZE:
        lines = [text.say("greeting_tokenize", merchant=ctx.merchant)]
    else:
        lines = [text.say("greeting_charge", merchant=ctx.merchant, amount=amount)]
    if ctx.description:
        lines.append(text.say("greeting_description", description=ctx.description))
    turn = _ask(state, ctx, lines)
    return replace(turn, reply=replace(turn.reply, say=(*turn.reply.say, text.say("star_hint"))))


def advance(state: CallState, event: Event, ctx: FlowContext) -> Turn:
    """One webhook's worth of the call, for a call already bound to a session."""
    if state.step in (Step.ACCESS_CODE, Step.DONE):
        raise ValueError(f"advance() cannot run at step {state.step}")
    if ctx.status in _ENDED_ELSEWHERE:
        return _ended(state, ctx)
    if isinstance(event, PaymentPending | GatewayAnswer):
        if state.step is Step.PROCESSING:
            return _on_payment(state, event, ctx)
        return _ask(state, ctx)
    if state.step is Step.PROCESSING or (event.step is not None and event.step is not state.step):
        return _ask(state, ctx)  # a repeated or stale delivery: say the current thing again
    text = catalog(ctx.language)
    if isinstance(event, Star):
        rule = _ENTRIES.get(state.step)
        card = replace(state.card, **{rule.field: ""}) if rule else state.card
        return _ask(replace(state, card=card), ctx, [text.say("restart")])
    if isinstance(event, Silence):
        return _retry(replace(state, silences=state.silences + 1), ctx, [text.say("silence")])
    if state.step in _MENUS:
        return _choose(state, _MENUS[state.step].get(event.digits), ctx)
    rule = _ENTRIES[state.step]
    reason = rule.check(event.digits, state.card, ctx)
    if reason is not None:
        return _retry(state, ctx, [_reason_sentence(reason, event.digits, state, ctx)])
    card = replace(state.card, **{rule.field: event.digits})
    next_step = rule.next
    if next_step is Step.POSTAL_CODE and not ctx.require_postal_code:
        next_step = Step.CONFIRM
    return _ask(_moved(state, next_step, card), ctx)


def error_reply(language: str) -> CallReply:
    """The apology for ``error.xml``, when something on our side broke mid-call."""
    text = catalog(language)
    return CallReply(
        template="error", say=(text.say("error"),), language=language, voice=text.voice
    )


def _ask(state: CallState, ctx: FlowContext, before: list[str] | None = None) -> Turn:
    """The prompt for ``state.step``, after ``before`` (a greeting, or what went wrong)."""
    text = catalog(ctx.language)
    lines = list(before or [])
    match state.step:
        case Step.SECURITY_CODE:
            length = security_code_length(state.card.brand)
            lines.append(text.say("security_code", length=spell_number(length, ctx.language)))
        case Step.CONFIRM:
            key = "confirm_tokenize" if ctx.mode is PaymentMode.TOKENIZE else "confirm_charge"
            brand = state.card.brand
            lines.append(
                text.say(
                    key,
                    card=text.say(f"card_{brand.value if brand else 'unknown'}"),
                    last4=speak_code(state.card.last4),
                    amount=speak_amount(ctx.amount_cents, ctx.currency, ctx.language),
                )
            )
        case Step.PROCESSING:
            lines.append(text.say("hold"))
        case Step.DECLINED:
            lines.append(text.say("retry_offer"))
        case _:
            lines.append(text.say(state.step.value))
    return Turn(state, _reply(state.step, lines, ctx.language))


def _retry(state: CallState, ctx: FlowContext, problem: list[str]) -> Turn:
    """A failed try: say what was wrong and ask again, or give up after ``MAX_TRIES``."""
    tries = state.tries + 1
    if tries < MAX_TRIES:
        return _ask(replace(state, tries=tries), ctx, problem)
    text = catalog(ctx.language)
    silent = state.silences >= tries  # the caller never keyed anything at this step
    if state.step is Step.DECLINED:
        reason = state.decline_code
    else:
        reason = NO_INPUT if silent else TOO_MANY_TRIES
    closing = text.say("no_input") if silent else text.say("too_many_tries")
    return _finish(state, ctx, Finish(Outcome.FAILED, reason), [*problem, closing])


def _choose(state: CallState, choice: str | None, ctx: FlowContext) -> Turn:
    text = catalog(ctx.language)
    if choice is None:
        return _retry(state, ctx, [text.say("invalid_choice")])
    if choice == _REENTER:
        return _ask(_moved(state, Step.CARD_NUMBER), ctx)
    if choice == _END:
        return _finish(state, ctx, Finish(Outcome.FAILED, state.decline_code), [])
    attempt = state.attempt + 1
    turn = _ask(replace(_moved(state, Step.PROCESSING), attempt=attempt), ctx)
    return replace(turn, actions=(StartPayment(attempt, state.card),))


def _on_payment(state: CallState, event: PaymentPending | GatewayAnswer, ctx: FlowContext) -> Turn:
    text = catalog(ctx.language)
    if isinstance(event, PaymentPending):
        polls = state.polls + 1
        if polls >= MAX_HOLD_POLLS:
            return _finish(
                state, ctx, Finish(Outcome.UNRESOLVED, PAYMENT_PENDING), [text.say("unresolved")]
            )
        lines = [text.say("hold_again")] if polls % HOLD_REMINDER_EVERY == 0 else []
        return Turn(replace(state, polls=polls), _reply(Step.PROCESSING, lines, ctx.language))
    if event.approved:
        key = "approved_tokenize" if ctx.mode is PaymentMode.TOKENIZE else "approved_charge"
        lines = [text.say(key)]
        if event.confirmation:
            lines.append(text.say("confirmation_number", number=speak_code(event.confirmation)))
        return _finish(state, ctx, Finish(Outcome.APPROVED), lines)
    decline_key = f"decline_{event.decline_code}"
    if decline_key not in text.prompts:
        decline_key = "decline_generic"
    lines = [text.say("declined"), text.say(decline_key)]
    if state.attempt >= ctx.max_attempts:
        return _finish(
            state,
            ctx,
            Finish(Outcome.FAILED, event.decline_code),
            [*lines, text.say("no_attempts_left")],
        )
    declined = replace(_moved(state, Step.DECLINED), decline_code=event.decline_code)
    return _ask(declined, ctx, lines)


def _ended(state: CallState, ctx: FlowContext) -> Turn:
    """The session ended outside this call: say how, in plain words, and hand the caller back."""
    sentence = catalog(ctx.language).say(f"ended_{ctx.status.value}")
    return _finish(state, ctx, Finish(Outcome.ENDED), [sentence])


def _finish(state: CallState, ctx: FlowContext, finish: Finish, lines: list[str]) -> Turn:
    """End the flow: the caller hears how the call continues."""
    text = catalog(ctx.language)
    closing = text.say("transfer") if ctx.has_callback else text.say("goodbye")
    done = _moved(state, Step.DONE)
    return Turn(done, _reply(Step.DONE, [*lines, closing], ctx.language), (finish,))


def _moved(state: CallState, step: Step, card: KeyedCard | None = None) -> CallState:
    """``state`` at a new step: tries and polls start again; the card only if carried on."""
    return CallState(
        step=step,
        session_id=state.session_id,
        attempt=state.attempt,
        decline_code=state.decline_code,
        card=card or KeyedCard(),
    )


def _reason_sentence(reason: Reason, digits: str, state: CallState, ctx: FlowContext) -> str:
    """The catalog's sentence for a refused entry, with the facts that make it specific."""
    brand = detect_brand(digits) if state.step is Step.CARD_NUMBER else state.card.brand
    accepted = [BRANDS[b].name for b in Brand if b in ctx.accepted_brands]
    return catalog(ctx.language).say(
        f"reason_{reason}",
        brand=BRANDS[brand].name if brand else "",
        accepted=speak_list(accepted, ctx.language),
        length=spell_number(security_code_length(brand), ctx.language),
    )
