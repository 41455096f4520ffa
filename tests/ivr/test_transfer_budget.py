"""Property: every `<Sip>` URI Paydial emits fits Twilio's limits and verifies on the agent's side.

Twilio refuses a SIP URI of 255 characters or more (error 13251) and a header part over 1,024
bytes (13252): https://www.twilio.com/docs/api/errors/13251. Callbacks are drawn from what the API
accepts; memory from unicode text with quotes and escapes, 0 to 20,000 characters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import xml.etree.ElementTree as ET

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic_core import PydanticCustomError

from api.schemas import MAX_MEMORY_CHARS, _callback
from ivr.transfer import MEMORY, MEMORY_REF, SESSION, SIGNATURE, STATUS, signing_key, transfer_for
from ivr.twiml import render_twiml
from payments.model import Status
from tests.ivr.twilio_client import sip_headers

SECRET = "budget-test-secret"
TOKEN = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)
USER = st.text("abcdefghijklmnopqrstuvwxyzABC0123456789-_.+!~*'()", min_size=1, max_size=40)
HOST = st.lists(TOKEN, min_size=1, max_size=4).map(".".join)
PARAMS = st.sampled_from(["", ";transport=tls", ";transport=tcp;lr", ";user=phone"])
HEADER = st.tuples(
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=10),
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.~%2F", max_size=12),
)


@st.composite
def callbacks(draw: st.DrawFn) -> str:
    """SIP callbacks the API accepts: parameters, port, the merchant's own headers."""
    port = draw(st.sampled_from(["", ":5060", ":5061"]))
    headers = draw(st.lists(HEADER, max_size=3))
    query = "&".join(f"X-{name}={value}" for name, value in headers)
    uri = (
        f"{draw(st.sampled_from(['sip', 'sips']))}:{draw(USER)}@{draw(HOST)}{port}"
        f"{draw(PARAMS)}{'?' + query if query else ''}"
    )
    try:
        accepted = _callback(uri)
    except PydanticCustomError:
        assume(False)
        raise
    assert accepted is not None
    return accepted


TRICKY = st.sampled_from(['"', "'", "&", "=", "%", "?", "\n", "<", "ü", "✓", "🎟", "\u200d", " "])
PIECE = st.text(min_size=1, max_size=20) | st.lists(TRICKY, min_size=1, max_size=5).map("".join)
MEMORIES = (
    st.none()
    | st.text(max_size=400)
    | st.builds(
        lambda piece, length: (piece * (length // len(piece) + 1))[:length],
        PIECE,
        st.integers(min_value=0, max_value=MAX_MEMORY_CHARS),
    )
)


def agent_verifies(headers: dict[str, str], key: bytes) -> bool:
    """The check ivr/transfer.py documents for agents, written out independently."""
    signed = (SESSION, STATUS, MEMORY, MEMORY_REF)
    lines = [f"{name}={headers[name]}" for name in signed if name in headers]
    mac = hmac.new(key, "\n".join(lines).encode(), hashlib.sha256).digest()[:16]
    expected = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    return hmac.compare_digest(expected, headers[SIGNATURE])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    callback=callbacks(),
    memory=MEMORIES,
    status=st.sampled_from([s.value for s in Status]),
    session_id=st.uuids().map(str),
)
def test_every_sip_uri_is_under_255_characters_and_its_signature_verifies(
    callback: str, memory: str | None, status: str, session_id: str
) -> None:
    transfer = transfer_for(
        callback, session_id=session_id, status=status, memory=memory, secret_key=SECRET
    )
    assert transfer is not None and transfer.sip_uri is not None
    xml = render_twiml(
        "dial_sip",
        say=(),
        language="en-US",
        voice="Polly.Joanna",
        sip_uri=transfer.sip_uri,
        dial_action_url="https://paydial.example.com/twilio/dial",
    )
    sip = ET.fromstring(xml).find("Dial/Sip")  # noqa: S314  # our own template
    assert sip is not None and sip.text is not None
    emitted = sip.text
    assert len(emitted) < 255
    assert len(emitted.partition("?")[2].encode()) < 1024
    assert emitted.startswith(callback)

    headers = sip_headers(emitted)
    assert (headers[SESSION], headers[STATUS]) == (session_id, status)
    assert agent_verifies(headers, signing_key(SECRET))
    if memory and MEMORY_REF not in headers:
        assert headers[MEMORY] == memory
    elif memory:
        assert headers[MEMORY_REF] == str(len(memory))
        assert memory.startswith(headers.get(MEMORY, ""))
    else:
        assert MEMORY not in headers and MEMORY_REF not in headers
