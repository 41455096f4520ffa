"""The transfer-back target: a phone number, or a signed SIP URI an agent can trust."""

from __future__ import annotations

from urllib.parse import parse_qsl

from ivr.transfer import (
    MAX_SIP_URI_LENGTH,
    MEMORY,
    MEMORY_REF,
    SESSION,
    SIGNATURE,
    STATUS,
    Transfer,
    signing_key,
    transfer_for,
    verify,
)

SECRET = "transfer-test-secret"
SESSION_ID = "4f6c2a1e-9a55-4d1e-8a53-0c7f3e1b2d44"


def _headers(uri: str) -> dict[str, str]:
    return dict(parse_qsl(uri.partition("?")[2], keep_blank_values=True))


def _sip(callback: str = "sip:agent@agents.example.com", memory: str | None = "hi") -> str:
    transfer = transfer_for(
        callback, session_id=SESSION_ID, status="payment-success", memory=memory, secret_key=SECRET
    )
    assert transfer is not None and transfer.sip_uri is not None and transfer.number is None
    return transfer.sip_uri


def test_no_callback_means_no_transfer() -> None:
    assert (
        transfer_for(
            None, session_id=SESSION_ID, status="payment-success", memory="m", secret_key=SECRET
        )
        is None
    )


def test_a_phone_callback_is_dialled_as_a_number_without_headers() -> None:
    transfer = transfer_for(
        "+14155550199",
        session_id=SESSION_ID,
        status="payment-failed",
        memory="m",
        secret_key=SECRET,
    )
    assert transfer == Transfer(number="+14155550199")
    assert transfer.template_context() == {"number": "+14155550199"}


def test_a_sip_callback_carries_signed_session_status_and_memory() -> None:
    headers = _headers(_sip(memory='a "b" & ç=1'))
    assert headers[SESSION] == SESSION_ID
    assert headers[STATUS] == "payment-success"
    assert headers[MEMORY] == 'a "b" & ç=1'
    assert len(headers[SIGNATURE]) == 22  # 128 bits, base64url
    assert verify(headers, signing_key(SECRET))


def test_any_changed_value_or_another_key_breaks_the_signature() -> None:
    headers = _headers(_sip())
    assert not verify({**headers, STATUS: "payment-failed"}, signing_key(SECRET))
    assert not verify({**headers, MEMORY: "other"}, signing_key(SECRET))
    assert not verify(headers, signing_key("another-secret"))
    assert signing_key(SECRET) != SECRET.encode()


def test_memory_too_long_for_the_uri_is_cut_to_fit_and_says_how_long_it_is() -> None:
    short = _sip(memory="x" * 10)
    long = _sip(memory="x" * 2000)
    assert len(short) <= MAX_SIP_URI_LENGTH and MEMORY_REF not in _headers(short)
    assert len(long) == MAX_SIP_URI_LENGTH  # the memory takes every character left
    headers = _headers(long)
    assert headers[MEMORY_REF] == "2000"
    assert headers[MEMORY] == "x" * len(headers[MEMORY]) and len(headers[MEMORY]) > 20
    assert SESSION_ID not in long.replace(f"{SESSION}={SESSION_ID}", "")  # the id only once
    assert verify(headers, signing_key(SECRET))


def test_headers_are_appended_to_a_callback_that_already_has_some() -> None:
    uri = _sip(callback="sip:agent@host?X-Queue=vip", memory=None)
    assert uri.startswith("sip:agent@host?X-Queue=vip&X-Paydial-Session=")
    assert MEMORY not in _headers(uri) and MEMORY_REF not in _headers(uri)
