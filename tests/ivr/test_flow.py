from __future__ import annotations

from dataclasses import fields, replace
from datetime import date

import pytest

from gateways.cards import Brand
from ivr.flow import (
    MAX_HOLD_POLLS,
    MAX_TRIES,
    AccessCodeLookup,
    Bind,
    CallState,
    Entry,
    Finish,
    FlowContext,
    GatewayAnswer,
    KeyedCard,
    Outcome,
    PaymentPending,
    Silence,
    Star,
    StartPayment,
    Step,
    Turn,
    advance,
    ask_access_code,
    enter_access_code,
    error_reply,
    greet,
    parse_gather,
)
from ivr.prompts import SUPPORTED_LANGUAGES
from payments.model import PaymentMode, Status

VISA = "4242424242424242"
AMEX = "378282246310005"


def make_context(**overrides: object) -> FlowContext:
    values: dict[str, object] = {
        "session_id": "sess_1",
        "merchant": "Acme Dental",
        "amount_cents": 150_00,
        "currency": "USD",
        "mode": PaymentMode.CHARGE,
        "today": date(2025, 6, 15),
    }
    values.update(overrides)
    return FlowContext(**values)  # type: ignore[arg-type]  # a test builder over every field


def key(turn: Turn, digits: str, ctx: FlowContext) -> Turn:
    return advance(turn.state, Entry(digits), ctx)


def walk_from(turn: Turn, ctx: FlowContext, *entries: str) -> Turn:
    for digits in entries:
        turn = key(turn, digits, ctx)
    return turn


def walk(ctx: FlowContext, *entries: str) -> Turn:
    return walk_from(greet(ctx), ctx, *entries)


def second_card() -> KeyedCard:
    return KeyedCard(number=VISA, expiry="1230", security_code="123")


def at_confirm(ctx: FlowContext, number: str = VISA) -> Turn:
    code = "1234" if number == AMEX else "123"
    zip_code = ("94107",) if ctx.require_postal_code else ()
    turn = walk(ctx, number, "1230", code, *zip_code)
    assert turn.state.step is Step.CONFIRM
    return turn


def processing(ctx: FlowContext) -> Turn:
    return key(at_confirm(ctx), "1", ctx)


# --- greeting -----------------------------------------------------------------------------------


def test_greeting_names_merchant_amount_and_description_then_asks_for_the_card() -> None:
    turn = greet(make_context(description="Cleaning & X-rays"))
    assert turn.state.step is Step.CARD_NUMBER
    assert turn.state.session_id == "sess_1"
    assert turn.reply.template == "card_number"
    assert turn.reply.say[0] == (
        "This is a secure payment to Acme Dental for one hundred fifty dollars."
    )
    assert turn.reply.say[1] == "This is for: Cleaning & X-rays."
    assert turn.reply.say[2].startswith("Please enter your card number")
    assert turn.actions == ()


def test_tokenize_greeting_says_the_card_is_saved_not_charged() -> None:
    turn = greet(make_context(mode=PaymentMode.TOKENIZE))
    assert turn.reply.say[0] == (
        "Acme Dental would like to save a card on file. Your card will be saved, not charged."
    )
    assert len(turn.reply.say) == 3  # greeting, card prompt, the star hint


def test_spanish_session_hears_spanish_with_a_spanish_voice() -> None:
    turn = greet(make_context(language="es-US", amount_cents=150_25))
    assert turn.reply.language == "es-US"
    assert turn.reply.voice == "Polly.Lupe"
    assert turn.reply.say[0] == (
        "Este es un pago seguro a Acme Dental por "
        "ciento cincuenta dólares con veinticinco centavos."
    )


def test_a_locked_out_caller_hears_why_and_is_handed_back_without_a_card_prompt() -> None:
    turn = greet(make_context(caller_locked_out=True, has_callback=True))
    assert turn.actions == (Finish(Outcome.FAILED, "velocity_limited"),)
    assert turn.state == CallState(step=Step.DONE, session_id="sess_1")
    assert turn.reply.template == "goodbye"
    assert turn.reply.say == (
        "Too many payments from this phone number have failed recently, so we cannot take a card "
        "on this call. Please try again later.",
        "Transferring you back now.",
    )


def test_a_locked_out_spanish_caller_hears_it_in_spanish_and_goodbye_without_a_callback() -> None:
    turn = greet(make_context(caller_locked_out=True, language="es-US"))
    assert turn.finish == Finish(Outcome.FAILED, "velocity_limited")
    assert turn.reply.say == (
        "Demasiados pagos desde este número de teléfono han fallado recientemente, así que no "
        "podemos tomar una tarjeta en esta llamada. Inténtelo más tarde.",
        "Gracias. Adiós.",
    )


# --- the happy path ----------------------------------------------------------------------------


def test_entries_move_card_expiry_code_confirm_without_zip() -> None:
    ctx = make_context()
    turn = greet(ctx)
    steps = []
    for digits in (VISA, "1230", "123"):
        turn = key(turn, digits, ctx)
        steps.append(turn.state.step)
    assert steps == [Step.EXPIRY, Step.SECURITY_CODE, Step.CONFIRM]
    assert turn.reply.template == "confirm"
    assert turn.reply.say == (
        "You entered a Visa card ending in 4 2 4 2, to pay one hundred fifty dollars. "
        "Press 1 to pay, or 2 to enter a different card.",
    )


def test_zip_step_is_asked_only_when_the_project_requires_it() -> None:
    ctx = make_context(require_postal_code=True)
    turn = walk(ctx, VISA, "1230", "123")
    assert turn.state.step is Step.POSTAL_CODE
    assert turn.reply.template == "postal_code"
    turn = key(turn, "94107", ctx)
    assert turn.state.step is Step.CONFIRM
    assert turn.state.card.postal_code == "94107"


def test_entered_values_are_kept_in_the_state_for_the_gateway() -> None:
    turn = at_confirm(make_context())
    card = turn.state.card
    assert (card.number, card.expiry, card.security_code) == (VISA, "1230", "123")
    assert (card.brand, card.last4, card.exp_month, card.exp_year) == (Brand.VISA, "4242", 12, 2030)


def test_pressing_1_starts_attempt_1_with_the_card_and_holds_at_once() -> None:
    ctx = make_context()
    confirm = at_confirm(ctx)
    turn = key(confirm, "1", ctx)
    assert turn.state.step is Step.PROCESSING
    assert turn.state.attempt == 1
    assert turn.actions == (StartPayment(1, confirm.state.card),)
    assert turn.reply.template == "hold"
    assert turn.reply.say == ("Thank you. Please hold while we process your card.",)
    assert turn.state.card == KeyedCard()  # the card left the state with StartPayment


def test_approval_says_the_confirmation_code_in_groups_and_finishes() -> None:
    ctx = make_context()
    turn = advance(
        processing(ctx).state, GatewayAnswer(approved=True, confirmation="40271953"), ctx
    )
    assert turn.finish == Finish(Outcome.APPROVED)
    assert turn.state.step is Step.DONE
    assert turn.reply.template == "goodbye"
    assert turn.reply.say == (
        "Your payment was approved.",
        "Your confirmation number is 4 0 2 7, 1 9 5 3.",
        "Thank you. Goodbye.",
    )


def test_approval_with_a_callback_says_it_transfers_back() -> None:
    ctx = make_context(has_callback=True, mode=PaymentMode.TOKENIZE)
    turn = advance(processing(ctx).state, GatewayAnswer(approved=True), ctx)
    assert turn.reply.say == ("Your card has been saved.", "Transferring you back now.")


# --- validation, one sentence per reason -------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "sentence"),
    [
        (("4242",), "That card number does not have the right number of digits."),
        (("4242424242424241",), "That card number is not valid. Please check the digits."),
        (("9999999999999995",), "We do not recognize that type of card."),
        ((VISA, "1330"), "That expiration date is not valid."),
        ((VISA, "0525"), "That card has expired."),
        ((VISA, "1230", "12"), "The security code for this card is three digits."),
        ((VISA, "1230", "1234"), "The security code for this card is three digits."),
        ((AMEX, "1230", "123"), "The security code for this card is four digits."),
        ((VISA, "1230", "123", "941"), "The ZIP code must be five or nine digits."),
    ],
)
def test_a_refused_entry_says_exactly_what_was_wrong_and_asks_again(
    entries: tuple[str, ...], sentence: str
) -> None:
    ctx = make_context(require_postal_code=True)
    before = walk(ctx, *entries[:-1])
    turn = key(before, entries[-1], ctx)
    assert turn.state.step is before.state.step
    assert turn.state.tries == 1
    assert turn.reply.say[0] == sentence
    assert turn.reply.say[1] in before.reply.say  # the same question again
    assert len(turn.reply.say) == 2  # and the star hint only once per call


def test_a_brand_the_project_does_not_accept_is_named_with_the_accepted_ones() -> None:
    ctx = make_context(accepted_brands=frozenset({Brand.VISA, Brand.MASTERCARD, Brand.DISCOVER}))
    turn = key(greet(ctx), AMEX, ctx)
    assert turn.reply.say[0] == (
        "Sorry, American Express is not accepted for this payment. "
        "We accept Visa, Mastercard and Discover."
    )


def test_spanish_refusals_come_from_the_spanish_catalog() -> None:
    ctx = make_context(language="es-US")
    turn = key(walk(ctx, AMEX, "1230"), "123", ctx)
    assert turn.reply.say[0] == "El código de seguridad de esta tarjeta tiene cuatro dígitos."


def test_amex_asks_for_four_digits_and_others_for_three() -> None:
    ctx = make_context()
    amex = walk(ctx, AMEX, "1230")
    visa = walk(ctx, VISA, "1230")
    assert amex.reply.say == (
        "Please enter the four digit security code, followed by the pound key.",
    )
    assert visa.reply.say == (
        "Please enter the three digit security code, followed by the pound key.",
    )
    assert key(amex, "1234", ctx).state.step is Step.CONFIRM


def test_a_good_entry_after_a_bad_one_resets_the_tries() -> None:
    ctx = make_context()
    turn = key(key(greet(ctx), "1", ctx), VISA, ctx)
    assert turn.state.step is Step.EXPIRY
    assert turn.state.tries == 0


# --- tries, silence, star ----------------------------------------------------------------------


def test_three_refused_entries_end_the_call_as_failed() -> None:
    ctx = make_context()
    turn = greet(ctx)
    for _ in range(MAX_TRIES):
        turn = key(turn, "1234", ctx)
    assert turn.finish == Finish(Outcome.FAILED, "too-many-failed-attempts")
    assert turn.state.step is Step.DONE
    assert turn.reply.template == "goodbye"
    assert turn.reply.say == (
        "That card number does not have the right number of digits.",
        "We could not complete the payment after several tries.",
        "Thank you. Goodbye.",
    )


def test_silence_reprompts_and_counts_as_a_try() -> None:
    ctx = make_context()
    turn = advance(greet(ctx).state, Silence(), ctx)
    assert turn.state.step is Step.CARD_NUMBER
    assert turn.state.tries == 1
    assert turn.reply.say[0] == "Sorry, I did not hear anything."
    turn = advance(advance(turn.state, Silence(), ctx).state, Silence(), ctx)
    assert turn.finish == Finish(Outcome.FAILED, "no_input")
    assert turn.reply.say[-2] == "We did not hear any keys, so the payment was not completed."


def test_silence_after_a_wrong_entry_ends_as_too_many_tries_not_as_no_input() -> None:
    ctx = make_context()
    turn = key(greet(ctx), "1234", ctx)
    turn = advance(advance(turn.state, Silence(), ctx).state, Silence(), ctx)
    assert turn.finish == Finish(Outcome.FAILED, "too-many-failed-attempts")


def test_star_restarts_the_current_entry_without_costing_a_try() -> None:
    ctx = make_context()
    turn = key(walk(ctx, VISA), "12", ctx)  # one bad expiry
    turn = advance(turn.state, Star(), ctx)
    assert turn.state.step is Step.EXPIRY
    assert turn.state.tries == 1
    assert turn.state.card.number == VISA
    assert turn.reply.say[0] == "Let's start that again."
    assert turn.reply.template == "expiry"


def test_star_at_the_confirmation_repeats_it() -> None:
    ctx = make_context()
    confirm = at_confirm(ctx)
    turn = advance(confirm.state, Star(), ctx)
    assert turn.state == confirm.state
    assert turn.reply.say[1:] == confirm.reply.say


def test_confirm_2_starts_the_card_again_from_the_number() -> None:
    ctx = make_context()
    turn = key(at_confirm(ctx), "2", ctx)
    assert turn.state.step is Step.CARD_NUMBER
    assert turn.state.card == KeyedCard()
    assert turn.actions == ()


def test_confirm_with_another_key_is_a_failed_try() -> None:
    ctx = make_context()
    turn = key(at_confirm(ctx), "7", ctx)
    assert turn.state.step is Step.CONFIRM
    assert turn.state.tries == 1
    assert turn.reply.say[0] == "That is not one of the choices."


# --- stale and repeated deliveries -------------------------------------------------------------


def test_a_delivery_for_an_earlier_step_replays_the_current_prompt() -> None:
    ctx = make_context()
    expiry = walk(ctx, VISA)
    turn = advance(expiry.state, Entry(VISA, step=Step.CARD_NUMBER), ctx)
    assert turn.state == expiry.state
    assert turn.reply == expiry.reply


def test_a_repeated_confirm_while_processing_holds_without_a_second_payment() -> None:
    ctx = make_context()
    held = processing(ctx)
    turn = advance(held.state, Entry("1", step=Step.CONFIRM), ctx)
    assert turn.actions == ()
    assert turn.state == held.state
    assert turn.reply.template == "hold"


def test_a_payment_event_outside_processing_repeats_the_current_prompt() -> None:
    ctx = make_context()
    expiry = walk(ctx, VISA)
    assert advance(expiry.state, PaymentPending(), ctx) == expiry


# --- processing and declines -------------------------------------------------------------------


def test_still_waiting_keeps_holding_with_an_occasional_reminder() -> None:
    ctx = make_context()
    state = processing(ctx).state
    said = []
    for _ in range(4):
        turn = advance(state, PaymentPending(), ctx)
        state = turn.state
        said.append(turn.reply.say)
        assert turn.reply.template == "hold"
        assert turn.actions == ()
    assert said == [(), (), (), ("Still working on it. Thank you for waiting.",)]


def test_holding_too_long_sends_the_caller_on_unresolved() -> None:
    ctx = make_context()
    state = replace(processing(ctx).state, polls=MAX_HOLD_POLLS - 1)
    turn = advance(state, PaymentPending(), ctx)
    assert turn.finish == Finish(Outcome.UNRESOLVED, "payment-pending")
    assert turn.state.step is Step.DONE


# What the caller at the hold limit hears: the job runs on after they leave, so no answer is
# promised, nor said to be awaited; every language says it (a new one fails here until it does).
HOLD_LIMIT = {
    "en-US": "Your payment is still being processed. "
    "The merchant will be told the result and will confirm it with you.",
    "es-US": "Su pago todavía se está procesando. "
    "El comercio recibirá el resultado y se lo confirmará.",
}


@pytest.mark.parametrize("language", sorted(SUPPORTED_LANGUAGES))
def test_the_caller_at_the_hold_limit_hears_the_payment_is_still_being_processed(
    language: str,
) -> None:
    ctx = make_context(language=language)
    state = replace(processing(ctx).state, polls=MAX_HOLD_POLLS - 1)
    turn = advance(state, PaymentPending(), ctx)
    assert turn.finish == Finish(Outcome.UNRESOLVED, "payment-pending")
    assert turn.reply.say[0] == HOLD_LIMIT[language]


def test_a_decline_gives_the_reason_and_offers_another_card() -> None:
    ctx = make_context()
    turn = advance(
        processing(ctx).state, GatewayAnswer(False, decline_code="insufficient_funds"), ctx
    )
    assert turn.state.step is Step.DECLINED
    assert turn.reply.template == "declined"
    assert turn.reply.say == (
        "Sorry, the payment did not go through.",
        "The card has insufficient funds.",
        "Press 1 to try another card, or 2 to end without paying.",
    )
    retry = key(turn, "1", ctx)
    assert retry.state.step is Step.CARD_NUMBER
    assert retry.state.attempt == 1
    second = key(walk_from(retry, ctx, VISA, "1230", "123"), "1", ctx)
    assert second.actions == (StartPayment(2, second_card()),)


def test_an_unknown_decline_code_gets_the_generic_sentence() -> None:
    ctx = make_context()
    turn = advance(processing(ctx).state, GatewayAnswer(False, decline_code="do_not_honor_x"), ctx)
    assert turn.reply.say[1] == "The payment could not be completed."


def test_pressing_2_after_a_decline_ends_failed_with_the_decline_code() -> None:
    ctx = make_context(has_callback=True)
    declined = advance(
        processing(ctx).state, GatewayAnswer(False, decline_code="card_declined"), ctx
    )
    turn = key(declined, "2", ctx)
    assert turn.finish == Finish(Outcome.FAILED, "card_declined")
    assert turn.reply.say == ("Transferring you back now.",)


def test_the_last_allowed_attempt_declined_ends_the_call() -> None:
    ctx = make_context(max_attempts=2)
    state = replace(processing(ctx).state, attempt=2)
    turn = advance(state, GatewayAnswer(False, decline_code="expired_card"), ctx)
    assert turn.finish == Finish(Outcome.FAILED, "expired_card")
    assert turn.reply.say == (
        "Sorry, the payment did not go through.",
        "The card has expired.",
        "No more attempts are allowed for this payment.",
        "Thank you. Goodbye.",
    )


def test_three_attempts_by_default_then_no_more() -> None:
    ctx = make_context()
    turn = processing(ctx)
    for attempt in (1, 2):
        turn = advance(turn.state, GatewayAnswer(False, decline_code="card_declined"), ctx)
        assert turn.state.step is Step.DECLINED
        turn = key(walk_from(key(turn, "1", ctx), ctx, VISA, "1230", "123"), "1", ctx)
        assert turn.actions == (StartPayment(attempt + 1, second_card()),)
    turn = advance(turn.state, GatewayAnswer(False, decline_code="card_declined"), ctx)
    assert turn.finish == Finish(Outcome.FAILED, "card_declined")


# --- access code -------------------------------------------------------------------------------


def lookup_for(ctx: FlowContext) -> AccessCodeLookup:
    return lambda code: ctx if code == "246810" else None


def test_an_unbound_call_is_welcomed_and_asked_for_the_access_code() -> None:
    turn = ask_access_code("en-US")
    assert turn.state == CallState(step=Step.ACCESS_CODE)
    assert turn.reply.template == "access_code"
    assert turn.reply.say == (
        "Welcome to the secure payment line.",
        "Please enter your six digit access code.",
    )


def test_the_right_access_code_binds_the_session_and_greets() -> None:
    ctx = make_context()
    turn = enter_access_code(
        ask_access_code("en-US").state, Entry("246810"), lookup_for(ctx), "en-US"
    )
    assert turn.actions == (Bind("sess_1"),)
    assert turn.state.session_id == "sess_1"
    assert turn.state.step is Step.CARD_NUMBER
    assert turn.reply == greet(ctx).reply


def test_the_right_access_code_from_a_locked_out_caller_binds_then_hands_back() -> None:
    ctx = make_context(caller_locked_out=True)
    turn = enter_access_code(
        ask_access_code("en-US").state, Entry("246810"), lookup_for(ctx), "en-US"
    )
    assert turn.actions == (Bind("sess_1"), Finish(Outcome.FAILED, "velocity_limited"))
    assert turn.state.step is Step.DONE
    assert turn.reply == greet(ctx).reply


def test_a_wrong_access_code_is_refused_and_three_misses_say_goodbye() -> None:
    lookup = lookup_for(make_context())
    turn = ask_access_code("en-US")
    turn = enter_access_code(turn.state, Entry("111111"), lookup, "en-US")
    assert turn.reply.say == (
        "That access code was not found.",
        "Please enter your six digit access code.",
    )
    turn = enter_access_code(turn.state, Silence(), lookup, "en-US")
    assert turn.reply.say[0] == "Sorry, I did not hear anything."
    turn = enter_access_code(turn.state, Entry("24681"), lookup, "en-US")
    assert turn.finish == Finish(Outcome.UNBOUND, "too-many-failed-attempts")
    assert turn.reply.template == "goodbye"
    assert turn.reply.say[-1] == "Thank you. Goodbye."


def test_star_at_the_access_code_asks_again_for_free() -> None:
    turn = enter_access_code(
        CallState(Step.ACCESS_CODE, tries=2), Star(), lookup_for(make_context()), "es-US"
    )
    assert turn.state.tries == 2
    assert turn.reply.say[-1] == "Por favor, marque su código de acceso de seis dígitos."


def test_advance_refuses_a_call_that_is_not_bound_or_already_done() -> None:
    ctx = make_context()
    with pytest.raises(ValueError, match="access_code"):
        advance(CallState(Step.ACCESS_CODE), Entry("1"), ctx)
    with pytest.raises(ValueError, match="done"):
        advance(CallState(Step.DONE), Entry("1"), ctx)


# --- Twilio input and serialisation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("digits", "finished_on_key", "event"),
    [
        ("", "", Silence(step=Step.EXPIRY)),
        ("", "#", Entry("", step=Step.EXPIRY)),
        ("1230", "#", Entry("1230", step=Step.EXPIRY)),
        ("12*", "", Star(step=Step.EXPIRY)),
        ("*", "", Star(step=Step.EXPIRY)),
    ],
)
def test_gather_parameters_become_events(digits: str, finished_on_key: str, event: object) -> None:
    assert parse_gather(digits, finished_on_key, "expiry") == event


def test_gather_without_a_step_parameter_has_no_expected_step() -> None:
    assert parse_gather("1") == Entry("1")


def test_state_roundtrips_through_bytes_with_the_card() -> None:
    state = replace(
        at_confirm(make_context(require_postal_code=True)).state,
        session_id="s-1",
        tries=2,
        silences=1,
        attempt=3,
        polls=4,
        decline_code="x",
    )
    blank = CallState(Step.ACCESS_CODE)
    unset = [f.name for f in fields(CallState) if getattr(state, f.name) == getattr(blank, f.name)]
    assert unset == [], "every field differs from its default, so none can be dropped unseen"
    assert CallState.from_bytes(state.to_bytes()) == state


def test_repr_never_shows_card_digits() -> None:
    ctx = make_context(require_postal_code=True)
    turn = key(at_confirm(ctx), "1", ctx)
    confirm = at_confirm(ctx)
    shown = repr(confirm) + repr(turn) + repr(Entry(VISA)) + str(confirm.state.card)
    for secret in (VISA, "1230", "94107", "4242"):
        assert secret not in shown
    assert "visa" in shown


def test_an_error_reply_apologises_in_the_callers_language() -> None:
    reply = error_reply("es-US")
    assert reply.template == "error"
    assert reply.say == ("Lo sentimos, ocurrió un error de nuestra parte.",)


def test_a_card_without_a_valid_expiry_has_no_month_and_says_no_digits() -> None:
    with pytest.raises(ValueError, match="no valid expiry") as caught:
        _ = KeyedCard(number=VISA, expiry="1399").exp_month
    assert "1399" not in str(caught.value)


def test_a_cancel_heard_at_any_step_ends_the_call_truthfully_without_a_gateway_call() -> None:
    ctx = make_context(has_callback=True)
    cancelled = replace(ctx, status=Status.CANCELLED)
    turn = advance(at_confirm(ctx).state, Entry("1"), cancelled)
    assert turn.actions == (Finish(Outcome.ENDED),)
    assert turn.reply.say == (
        "The merchant cancelled this payment. No money was taken.",
        "Transferring you back now.",
    )


def test_a_confirmation_repeated_after_the_payment_succeeded_replays_instead_of_ending() -> None:
    ctx = make_context()
    late = advance(at_confirm(ctx).state, Entry("1"), replace(ctx, status=Status.PAYMENT_SUCCESS))
    assert late.finish is None
