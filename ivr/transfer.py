"""Handing the caller back: the `<Dial>` target for a session's callback, signed for SIP agents.

A phone callback (E.164) is dialled as a `<Number>`. A SIP callback is dialled as a `<Sip>` URI
whose query parameters Twilio turns into SIP headers on the INVITE:

    X-Paydial-Session     the session id
    X-Paydial-Status      the session status at transfer time (e.g. payment-success)
    X-Paydial-Memory      the memory the agent left, when the whole URI stays within 255 chars
    X-Paydial-Memory-Ref  otherwise: the session id; GET /v1/sessions/{id} returns the memory
    X-Paydial-Signature   hex HMAC-SHA256 over the values above

Every value is percent-encoded (UTF-8, nothing left unescaped). The signature covers the
decoded values: the lines `X-Paydial-Session=<id>`, `X-Paydial-Status=<status>` and, when
present, either `X-Paydial-Memory=<memory>` or `X-Paydial-Memory-Ref=<ref>`, in that order,
joined by "\\n" and UTF-8 encoded (memory comes last, so a newline inside it cannot shift a
field). The HMAC key is `HMAC-SHA256(key=PAYDIAL_SECRET_KEY, msg="paydial/sip-transfer/v1")`;
`signing_key(secret)` computes it, so an operator can hand agents this key and never the secret.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

MAX_SIP_URI_LENGTH = 255
SESSION, STATUS, MEMORY, MEMORY_REF, SIGNATURE = (
    "X-Paydial-Session",
    "X-Paydial-Status",
    "X-Paydial-Memory",
    "X-Paydial-Memory-Ref",
    "X-Paydial-Signature",
)
_KEY_LABEL = b"paydial/sip-transfer/v1"


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
    """Hex HMAC-SHA256 over the signed headers present in `headers` (see the module docstring)."""
    lines = [
        f"{name}={headers[name]}"
        for name in (SESSION, STATUS, MEMORY, MEMORY_REF)
        if name in headers
    ]
    return hmac.new(key, "\n".join(lines).encode(), hashlib.sha256).hexdigest()


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
    key = signing_key(secret_key)
    base = {SESSION: session_id, STATUS: status}
    if memory:
        uri = _sip_uri(callback, {**base, MEMORY: memory}, key)
        if len(uri) <= MAX_SIP_URI_LENGTH:
            return Transfer(sip_uri=uri)
        base[MEMORY_REF] = session_id
    return Transfer(sip_uri=_sip_uri(callback, base, key))


def _sip_uri(callback: str, headers: dict[str, str], key: bytes) -> str:
    signed = {**headers, SIGNATURE: sign(headers, key)}
    query = "&".join(f"{name}={quote(value, safe='')}" for name, value in signed.items())
    return f"{callback}{'&' if '?' in callback else '?'}{query}"
