"""`paydial call`: a phone in the terminal that plays Twilio's part against a running server.

It posts signed, form-encoded webhooks with Twilio's parameter names, follows `<Gather action>`,
`<Redirect>`, `<Dial action>` and `<Hangup>`, prints each `<Say>` and sends typed keys as
`Digits` (an empty line is silence, `h` hangs up). When the call ends it posts the status
callback, as Twilio does. Requests are signed for the server's PAYDIAL_PUBLIC_URL (what Twilio
would call) and sent to `--server` (where the server actually listens).

The same `Phone` drives the end-to-end tests through a Flask test client (`Transport`).
"""

from __future__ import annotations

import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from twilio.request_validator import RequestValidator

from payments.local import DEFAULT_PUBLIC_URL

API_VERSION = "2010-04-01"
SUCCESS_STATUSES = frozenset({"payment-success", "payment-authorized"})
STATUS_HEADER = "X-Paydial-Status"
DEFAULT_URL = DEFAULT_PUBLIC_URL  # where `paydial serve` listens unless told otherwise


class PhoneError(Exception):
    """The server answered something Twilio would not accept (`status`: its HTTP status, if any)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: str
    headers: Mapping[str, str]


# (path with query, form, headers) -> the server's reply
Transport = Callable[[str, Mapping[str, str], Mapping[str, str]], HttpReply]


def http_transport(server_url: str, *, timeout: float = 20.0) -> Transport:
    """Send webhooks to a server over HTTP."""
    base = server_url.rstrip("/")

    def send(path: str, form: Mapping[str, str], headers: Mapping[str, str]) -> HttpReply:
        data = urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(  # noqa: S310  # the operator's own server URL
            base + path,
            data=data,
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return HttpReply(response.status, response.read().decode(), dict(response.headers))
        except urllib.error.HTTPError as error:
            return HttpReply(error.code, error.read().decode(), dict(error.headers))

    return send


class Keypad(Protocol):
    def press(self, prompt: list[str]) -> str | None:
        """Keys for one `<Gather>` ("#" ends an entry, "" is silence), or None to hang up."""
        ...


@dataclass
class ScriptedKeypad:
    """Entries played in order; None hangs up; running out of entries hangs up too."""

    entries: list[str | None]
    echo: Callable[[str], None] | None = None

    @classmethod
    def from_digits(cls, script: str, echo: Callable[[str], None] | None = None) -> ScriptedKeypad:
        """`"4242424242424242#1230#123#1"`: each `#` ends (and is pressed after) an entry."""
        parts = script.split("#")
        entries: list[str | None] = [part + "#" for part in parts[:-1]]
        if parts[-1]:
            entries.append(parts[-1])
        return cls(entries, echo)

    def __post_init__(self) -> None:
        self.entries = list(self.entries)  # played destructively; the caller's list stays intact

    def press(self, prompt: list[str]) -> str | None:
        keys = self.entries.pop(0) if self.entries else None
        if self.echo is not None:
            self.echo("  [hangs up]" if keys is None else f"  > {keys or '(silence)'}")
        return keys


class TerminalKeypad:
    """Reads a line per `<Gather>`; Enter counts as the `#` key."""

    def press(self, prompt: list[str]) -> str | None:
        try:
            line = input("keys (Enter = #, empty = silence, h = hang up)> ").strip()
        except EOFError:
            return None
        if line.lower() == "h":
            return None
        return line if not line or line.endswith("#") else line + "#"


@dataclass
class CallResult:
    heard: list[str] = field(default_factory=list)
    dialed: list[str] = field(default_factory=list)
    status: str | None = None  # the bound session's status, as the server last reported it
    caller_hung_up: bool = False

    @property
    def succeeded(self) -> bool:
        return self.status in SUCCESS_STATUSES


def gather_keys(keys: str, num_digits: int | None) -> tuple[str, str]:
    """What Twilio reports for keys pressed into a Gather: (Digits, FinishedOnKey)."""
    finished = keys.endswith("#")
    digits = keys.split("#", 1)[0]
    if num_digits is not None and len(digits) >= num_digits:
        return digits[:num_digits], ""
    return digits, "#" if finished else ""


class Phone:
    """One inbound call, as Twilio would place it."""

    def __init__(
        self,
        transport: Transport,
        *,
        auth_token: str,
        public_url: str,
        from_: str,
        to: str,
        extra: Mapping[str, str] | None = None,
        call_sid: str | None = None,
        out: Callable[[str], None] = print,
        pause_scale: float = 1.0,
        max_requests: int = 300,
    ) -> None:
        self._send = transport
        self._validator = RequestValidator(auth_token)
        self.public_url = public_url.rstrip("/")
        self.call_sid = call_sid or "CA" + secrets.token_hex(16)
        self.params = {
            "CallSid": self.call_sid,
            "AccountSid": "AC" + secrets.token_hex(16),
            "From": from_,
            "To": to,
            "Caller": from_,
            "Called": to,
            "Direction": "inbound",
            "ApiVersion": API_VERSION,
            **(extra or {}),
        }
        self._out = out
        self._pause_scale = pause_scale
        self._budget = max_requests
        self.result = CallResult()
        self.requests: list[tuple[str, dict[str, str]]] = []  # (url, form) of each webhook sent

    def post(
        self,
        url: str,
        form: Mapping[str, str] | None = None,
        *,
        status: str = "in-progress",
        signature: str | None = None,
    ) -> HttpReply:
        """POST one webhook to a public URL, signed like Twilio (or with `signature`)."""
        if not url.startswith(self.public_url + "/"):
            raise PhoneError(f"TwiML points outside {self.public_url}: {url}")
        params = {**self.params, "CallStatus": status, **(form or {})}
        self.requests.append((url, params))
        sign = self._validator.compute_signature(url, params)
        reply = self._send(
            url[len(self.public_url) :],
            params,
            {"X-Twilio-Signature": sign if signature is None else signature},
        )
        self.result.status = reply.headers.get(STATUS_HEADER, self.result.status)
        return reply

    def call(self, keypad: Keypad) -> CallResult:
        """Place the call and follow the TwiML until someone hangs up."""
        next_request: tuple[str, dict[str, str]] | None = (f"{self.public_url}/twilio/voice", {})
        status = "ringing"
        while next_request is not None:
            self._budget -= 1
            if self._budget < 0:
                raise PhoneError("the call did not end after many webhooks")
            url, form = next_request
            reply = self.post(url, form, status=status)
            status = "in-progress"
            if reply.status != 200:
                raise PhoneError(
                    f"{url} answered {reply.status}: {reply.body[:200]}", status=reply.status
                )
            next_request = self._follow(reply.body, keypad)
        self.post(f"{self.public_url}/twilio/status", {"CallDuration": "42"}, status="completed")
        return self.result

    def _follow(self, twiml: str, keypad: Keypad) -> tuple[str, dict[str, str]] | None:
        """Play one TwiML document; the next webhook to send, or None when the call is over."""
        root = ET.fromstring(twiml)  # noqa: S314  # our own server's TwiML
        if root.tag != "Response":
            raise PhoneError(f"not TwiML: <{root.tag}>")
        for verb in root:
            if verb.tag == "Say":
                self._hear(verb)
            elif verb.tag == "Pause":
                time.sleep(float(verb.get("length", "1")) * self._pause_scale)
            elif verb.tag == "Gather":
                prompt = [self._hear(say) for say in verb.iter("Say")]
                keys = keypad.press(prompt)
                if keys is None:
                    self.result.caller_hung_up = True
                    return None
                num_digits = verb.get("numDigits")
                digits, finished = gather_keys(keys, int(num_digits) if num_digits else None)
                if digits or finished or verb.get("actionOnEmptyResult") == "true":
                    return _required(verb.get("action"), "Gather action"), {
                        "Digits": digits,
                        "FinishedOnKey": finished,
                    }
            elif verb.tag == "Redirect":
                return _required(verb.text, "Redirect URL"), {}
            elif verb.tag == "Dial":
                target = next(iter(verb), None)
                dialed = (target.text or "").strip() if target is not None else ""
                self.result.dialed.append(dialed)
                self._out(f"[transferred to {dialed}]")
                if verb.get("action"):
                    return verb.get("action", ""), {
                        "DialCallStatus": "completed",
                        "DialCallDuration": "30",
                    }
            elif verb.tag == "Hangup":
                return None
            else:
                raise PhoneError(f"unexpected TwiML verb <{verb.tag}>")
        return None

    def _hear(self, say: ET.Element) -> str:
        text = (say.text or "").strip()
        self.result.heard.append(text)
        self._out(f"< {text}")
        return text


def _required(value: str | None, what: str) -> str:
    if not value:
        raise PhoneError(f"TwiML without a {what}")
    return value.strip()


def dial_target(target: str, sip_domain: str, phone_number: str) -> tuple[str, str, dict[str, str]]:
    """(From, To, extra params) for `paydial call`: a session id calls its SIP URI, a number calls
    the Paydial number from that caller ID."""
    if target.startswith("+"):
        return target, phone_number, {}
    sip_from = f"sip:paydial-call@{sip_domain}"
    return sip_from, f"sip:{target}@{sip_domain}", {"SipDomain": sip_domain}
