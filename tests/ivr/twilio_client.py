"""A Twilio-behaving client for the Flask app: `ivr.phone.Phone` over the Flask test client.

Requests are signed exactly as Twilio signs them (PUBLIC_URL + path + query, every form field),
TwiML is parsed as XML, and `<Gather action>`, `<Redirect>`, `<Dial action>` are followed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from urllib.parse import parse_qsl

from flask.testing import FlaskClient

from ivr.phone import HttpReply, Phone, Transport
from tests.conftest import PUBLIC_URL, TEST_TWILIO_TOKEN


def flask_transport(client: FlaskClient) -> Transport:
    def send(path: str, form: Mapping[str, str], headers: Mapping[str, str]) -> HttpReply:
        response = client.post(path, data=dict(form), headers=dict(headers))
        return HttpReply(
            response.status_code, response.get_data(as_text=True), dict(response.headers)
        )

    return send


def make_phone(
    client: FlaskClient,
    *,
    from_: str = "+14155550100",
    to: str = "+15005550006",
    extra: Mapping[str, str] | None = None,
    pause_scale: float = 0.01,
) -> Phone:
    return phone_over(
        flask_transport(client), from_=from_, to=to, extra=extra, pause_scale=pause_scale
    )


def phone_over(
    transport: Transport,
    *,
    from_: str = "+14155550100",
    to: str = "+15005550006",
    extra: Mapping[str, str] | None = None,
    pause_scale: float = 0.01,
) -> Phone:
    """A Twilio-behaving phone over any transport (`ivr.phone.http_transport` for a server)."""
    return Phone(
        transport,
        auth_token=TEST_TWILIO_TOKEN,
        public_url=PUBLIC_URL,
        from_=from_,
        to=to,
        extra=extra,
        out=lambda _line: None,
        pause_scale=pause_scale,
    )


def twiml(body: str) -> ET.Element:
    root = ET.fromstring(body)  # noqa: S314  # the app's own TwiML
    assert root.tag == "Response"
    return root


def sip_headers(sip_uri: str) -> dict[str, str]:
    """The X- headers Twilio would put on the INVITE for a `<Dial><Sip>` URI, decoded."""
    _, _, query = sip_uri.partition("?")
    return dict(parse_qsl(query, keep_blank_values=True))
