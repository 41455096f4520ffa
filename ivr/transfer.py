"""Handing the caller back: the `<Dial>` target for a session's callback, signed for SIP agents.

A phone callback (E.164) is dialled as a `<Number>`. A SIP callback is dialled as a `<Sip>` URI
whose query parameters Twilio turns into SIP headers on the INVITE; the callback's own headers
(`sip:agent@host?X-Trunk=7`) come first and are kept:

    X-Paydial-Session     the session id
    X-Paydial-Status      the session status at transfer time (e.g. payment-success), or
                          `processing` while a charge is with the gateway (poll the session)
    X-Paydial-Memory      the memory the agent left: all of it, or as much of its start as fits
    X-Paydial-Memory-Ref  only when X-Paydial-Memory was cut short: the whole memory's length in
                          characters; GET /v1/sessions/{X-Paydial-Session} returns all of it
    X-Paydial-Signature   see below

Twilio refuses a `<Sip>` URI of 255 characters or more (error 13251) and a header part over
1,024 bytes (error 13252): https://www.twilio.com/docs/api/errors/13251 and /13252. Every URI made
here is at most `MAX_SIP_URI_LENGTH` characters: a callback may be at most
`MAX_SIP_CALLBACK_LENGTH` (api/schemas.py refuses longer ones), which leaves room for the session,
the longest status, a memory reference and the signature, and the memory gets what is left.

Every value is percent-encoded (UTF-8, nothing left unescaped). The signature covers the
decoded values: the lines `X-Paydial-Session=<id>`, `X-Paydial-Status=<status>`, then, when
present, `X-Paydial-Memory=<memory>` and `X-Paydial-Memory-Ref=<length>`, in that order, joined
by "\\n" and UTF-8 encoded. It is the first 16 bytes (128 bits) of HMAC-SHA256 over those lines,
base64url-encoded without padding (22 characters). The HMAC key is
`HMAC-SHA256(key=PAYDIAL_SECRET_KEY, msg="paydial/sip-transfer/v1")`; `signing_key(secret)`
computes it, so an operator can hand agents this key and never the secret. An agent checks:

    lines = [f"{n}={headers[n]}" for n in (SESSION, STATUS, MEMORY, MEMORY_REF) if n in headers]
    mac = hmac.new(key, "\\n".join(lines).encode(), hashlib.sha256).digest()[:16]
    expected = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    ok = hmac.compare_digest(expected, headers[SIGNATURE])
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

MAX_SIP_URI_LENGTH = 254  # Twilio: "under 255"
SESSION, STATUS, MEMORY, MEMORY_REF, SIGNATURE = (
    "X-Paydial-Session",
    "X-Paydial-Status",
    "X-Paydial-Memory",
    "X-Paydial-Memory-Ref",
    "X-Paydial-Signature",
)
_SIGNED = (SESSION, STATUS, MEMORY, MEMORY_REF)
_SIGNATURE_BYTES = 16
_KEY_LABEL = b"paydial/sip-transfer/v1"
_WORST_CASE = {  # the longest session id, status and memory length a transfer can carry
    SESSION: "0" * 36,
    STATUS: "payment-authorized",
    MEMORY_REF: "20000",
}
PROCESSING = "processing"  # X-Paydial-Status for a caller handed back while a charge is running


@dataclass(frozen=True)
class Transfer:
    """Where `<Dial>` sends the caller: exactly one of `number` and `sip_uri` is set."""

    number: str | None = None
    sip_uri: str | None = None

    def template_context(self) -> dict[str, str]:
        """The dial_number / dial_sip (and error) template variables for this target."""
        return {"number": self.number} if self.number else {"sip_uri": self.sip_uri or ""}


def is_sip(callback: str) -> bool:
    return callback.lower().startswith(("sip:", "sips:"))


def signing_key(secret_key: str) -> bytes:
    """The key agents verify X-Paydial-Signature with, derived so the master secret stays home."""
    return hmac.new(secret_key.encode(), _KEY_LABEL, hashlib.sha256).digest()


def sign(headers: Mapping[str, str], key: bytes) -> str:
    """The signature over the signed headers present in `headers` (see the module docstring)."""
    lines = [f"{name}={headers[name]}" for name in _SIGNED if name in headers]
    mac = hmac.new(key, "\n".join(lines).encode(), hashlib.sha256).digest()[:_SIGNATURE_BYTES]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def verify(headers: Mapping[str, str], key: bytes) -> bool:
    """What an agent runs on the decoded X-Paydial-* headers it received."""
    return hmac.compare_digest(sign(headers, key), headers.get(SIGNATURE, ""))


def transfer_for(
    callback: str | None, *, session_id: str, status: str, memory: str | None, secret_key: str
) -> Transfer | None:
    """The dial target for a session, or None when it has no callback (thank and hang up)."""
    if not callback:
        return None
    if not is_sip(callback):
        return Transfer(number=callback)
    if len(callback) > MAX_SIP_CALLBACK_LENGTH:
        raise ValueError("the callback leaves no room for the transfer headers")
    key = signing_key(secret_key)
    base = {SESSION: session_id, STATUS: status}
    if not memory:
        return Transfer(sip_uri=_sip_uri(callback, base, key))
    whole = _sip_uri(callback, {**base, MEMORY: memory}, key)
    if len(whole) <= MAX_SIP_URI_LENGTH:
        return Transfer(sip_uri=whole)
    reference = {**base, MEMORY: "", MEMORY_REF: str(len(memory))}
    room = MAX_SIP_URI_LENGTH - len(_sip_uri(callback, reference, key))
    if room <= 0:
        del reference[MEMORY]
        return Transfer(sip_uri=_sip_uri(callback, reference, key))
    reference[MEMORY] = _start_within(memory, room)
    return Transfer(sip_uri=_sip_uri(callback, reference, key))


def _start_within(text: str, room: int) -> str:
    """The longest start of `text` whose percent-encoding takes at most `room` characters."""
    used = 0
    for index, char in enumerate(text):
        used += len(quote(char, safe=""))
        if used > room:
            return text[:index]
    return text


def _sip_uri(callback: str, headers: dict[str, str], key: bytes) -> str:
    signed = {**headers, SIGNATURE: sign(headers, key)}
    query = "&".join(f"{name}={quote(value, safe='')}" for name, value in signed.items())
    has_headers = "?" in callback.partition("@")[2]  # the merchant's own headers come first
    return f"{callback}{'&' if has_headers else '?'}{query}"


# The longest callback that always leaves room for the Paydial headers (93 characters).
MAX_SIP_CALLBACK_LENGTH = MAX_SIP_URI_LENGTH - len(_sip_uri("", _WORST_CASE, b""))
