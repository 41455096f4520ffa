from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date

import pytest
from jinja2 import UndefinedError

from ivr.flow import FlowContext, Step, error_reply, greet
from ivr.twiml import TEMPLATE_DIR, render_twiml
from payments.model import PaymentMode

ACTION = "https://pay.example.com/twilio/gather?step=x&call=1"
SPEECH = {"say": ("Hello.", "Press 1."), "language": "en-US", "voice": "Polly.Joanna"}
GATHER_STEPS = [s for s in Step if s not in (Step.PROCESSING, Step.DONE)]


def parse(xml: str) -> ET.Element:
    root = ET.fromstring(xml)  # noqa: S314  # our own rendered TwiML, not untrusted input
    assert root.tag == "Response"
    return root


def says(root: ET.Element) -> list[str]:
    return [el.text or "" for el in root.iter("Say")]


@pytest.mark.parametrize("step", GATHER_STEPS)
def test_every_gathering_step_renders_a_dtmf_gather_that_always_posts_back(step: Step) -> None:
    root = parse(render_twiml(step, **SPEECH, action_url=ACTION))
    [gather] = list(root)
    assert gather.tag == "Gather"
    assert gather.attrib["input"] == "dtmf"
    assert gather.attrib["action"] == ACTION
    assert gather.attrib["method"] == "POST"
    assert gather.attrib["actionOnEmptyResult"] == "true"
    assert gather.attrib["finishOnKey"] == "#"
    assert 5 <= int(gather.attrib["timeout"]) <= 10
    assert [el.tag for el in gather] == ["Say", "Say"]
    assert says(gather) == ["Hello.", "Press 1."]
    for say in gather:
        assert say.attrib == {"language": "en-US", "voice": "Polly.Joanna"}


@pytest.mark.parametrize(
    ("step", "num_digits"),
    [
        (Step.ACCESS_CODE, "6"),
        (Step.CARD_NUMBER, None),
        (Step.EXPIRY, None),  # "*" would count towards a fixed length
        (Step.SECURITY_CODE, None),  # three or four digits: "#" or the timeout ends it
        (Step.POSTAL_CODE, None),
        (Step.CONFIRM, "1"),
        (Step.DECLINED, "1"),
    ],
)
def test_num_digits_is_set_only_where_the_length_is_fixed(
    step: Step, num_digits: str | None
) -> None:
    gather = parse(render_twiml(step, **SPEECH, action_url=ACTION)).find("Gather")
    assert gather is not None
    assert gather.attrib.get("numDigits") == num_digits


def test_merchant_text_with_markup_characters_is_escaped_and_survives_parsing() -> None:
    ctx = FlowContext(
        session_id="s",
        merchant='Smith & Sons <"Plumbing">',
        amount_cents=10_00,
        currency="USD",
        mode=PaymentMode.CHARGE,
        today=date(2025, 1, 1),
        description="</Say><Hangup/>",
    )
    reply = greet(ctx).reply
    root = parse(render_twiml(reply.template, **reply.context(), action_url=ACTION))
    assert says(root)[0] == 'This is a secure payment to Smith & Sons <"Plumbing"> for ten dollars.'
    assert says(root)[1] == "This is for: </Say><Hangup/>."
    assert root.find(".//Hangup") is None


def test_spanish_replies_set_the_language_and_voice_on_every_say() -> None:
    reply = error_reply("es-US")
    root = parse(render_twiml(reply.template, **reply.context()))
    assert [el.attrib["language"] for el in root.iter("Say")] == ["es-US"]
    assert [el.attrib["voice"] for el in root.iter("Say")] == ["Polly.Lupe"]


def test_hold_says_pauses_and_redirects_to_the_result_url() -> None:
    root = parse(render_twiml("hold", **SPEECH, redirect_url=ACTION, pause=2))
    assert [el.tag for el in root] == ["Say", "Say", "Pause", "Redirect"]
    assert root[2].attrib == {"length": "2"}
    assert root[3].attrib == {"method": "POST"}
    assert root[3].text == ACTION


def test_hold_after_a_poll_that_waited_redirects_at_once() -> None:
    """Twilio's <Pause> takes whole seconds above 0: a poll that waited asks for none."""
    root = parse(
        render_twiml("hold", say=(), language="en-US", voice="v", redirect_url=ACTION, pause=0)
    )
    assert [el.tag for el in root] == ["Redirect"]


def test_dial_number_transfers_to_the_callback_with_an_action() -> None:
    root = parse(
        render_twiml("dial_number", **SPEECH, number="+14155550100", dial_action_url=ACTION)
    )
    assert [el.tag for el in root] == ["Say", "Say", "Dial"]
    dial = root[2]
    assert dial.attrib["action"] == ACTION
    assert dial.attrib["method"] == "POST"
    assert [(el.tag, el.text) for el in dial] == [("Number", "+14155550100")]


def test_dial_sip_carries_the_uri_with_its_header_parameters_intact() -> None:
    uri = "sip:agent@pbx.example.com?X-Paydial-Session=sess_1&X-Paydial-Status=payment-success"
    xml = render_twiml("dial_sip", **SPEECH, sip_uri=uri, dial_action_url=ACTION)
    dial = parse(xml).find("Dial")
    assert dial is not None
    assert dial.attrib["action"] == ACTION
    sip = dial.find("Sip")
    assert sip is not None
    assert sip.text == uri


def test_goodbye_says_its_lines_then_hangs_up() -> None:
    root = parse(render_twiml("goodbye", **SPEECH))
    assert [el.tag for el in root] == ["Say", "Say", "Hangup"]


@pytest.mark.parametrize(
    ("extra", "last"),
    [
        ({}, "Hangup"),
        ({"number": "+14155550100", "dial_action_url": ACTION}, "Dial/Number"),
        ({"sip_uri": "sip:a@b.example.com?X-A=1&X-B=2", "dial_action_url": ACTION}, "Dial/Sip"),
    ],
)
def test_error_apologises_then_transfers_back_or_hangs_up(extra: dict[str, str], last: str) -> None:
    reply = error_reply("en-US")
    root = parse(render_twiml("error", **reply.context(), **extra))
    assert says(root) == ["We are sorry, something went wrong on our side."]
    assert root[-1].tag == last.split("/")[0]
    assert root.find(last) is not None


def test_a_missing_url_is_an_error_not_an_empty_attribute() -> None:
    with pytest.raises(UndefinedError, match="action_url"):
        render_twiml(Step.CARD_NUMBER, **SPEECH)


def test_partials_cannot_be_rendered_as_documents() -> None:
    with pytest.raises(ValueError, match="partial"):
        render_twiml("_gather", **SPEECH, action_url=ACTION)


def test_every_template_the_flow_or_webhooks_name_exists() -> None:
    names = {p.stem for p in TEMPLATE_DIR.glob("*.xml") if not p.stem.startswith("_")}
    expected = {s.value for s in GATHER_STEPS} | {
        "hold",
        "goodbye",
        "dial_number",
        "dial_sip",
        "error",
    }
    assert names == expected
