"""`paydial call`: the terminal phone against a real server, signed like Twilio."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from ivr.phone import ScriptedKeypad, gather_keys
from paydial.cli import main
from tests.conftest import PUBLIC_URL, TEST_TWILIO_TOKEN
from tests.ivr.conftest import APPROVED, CVV, DECLINED, EXPIRY


@pytest.fixture
def call_backend() -> str:
    """`paydial serve`'s setup: call state in memory, gateway jobs on a thread pool."""
    return "memory-threads"


@pytest.fixture
def server_url(app: Flask, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """The app on a real port; the environment `paydial call` reads points at it."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TEST_TWILIO_TOKEN)
    monkeypatch.setenv("PAYDIAL_PUBLIC_URL", PUBLIC_URL)  # what Twilio would sign, not --server
    monkeypatch.setenv("PAYDIAL_SIP_DOMAIN", "pay.sip.example.com")
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def test_keys_become_digits_and_the_finishing_key_as_twilio_reports_them() -> None:
    assert gather_keys("4242#", None) == ("4242", "#")
    assert gather_keys("12301", 4) == ("1230", "")
    assert gather_keys("", None) == ("", "")
    assert gather_keys("#", None) == ("", "#")


def test_a_digit_script_splits_into_entries_at_each_pound_key() -> None:
    keypad = ScriptedKeypad.from_digits("4242#1230#123#1")
    assert keypad.entries == ["4242#", "1230#", "123#", "1"]
    assert [keypad.press([]) for _ in range(5)] == ["4242#", "1230#", "123#", "1", None]


def test_paydial_call_pays_a_session_unattended_and_exits_zero(
    server_url: str,
    new_session: Callable[..., dict[str, Any]],
    read_session: Callable[[str], dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    created = new_session(callback="+14155550199")
    digits = f"{APPROVED}#{EXPIRY}#{CVV}#1"

    assert main(["call", created["session_id"], "--server", server_url, "--digits", digits]) == 0

    out = capsys.readouterr().out
    assert "< Your payment was approved." in out
    assert "[transferred to +14155550199]" in out
    assert read_session(created["session_id"])["status"] == "payment-success"


def test_paydial_call_by_caller_id_exits_non_zero_when_the_card_is_declined(
    server_url: str,
    new_session: Callable[..., dict[str, Any]],
    read_session: Callable[[str], dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    created = new_session(caller="+14155550177")
    digits = f"{DECLINED}#{EXPIRY}#{CVV}#1#2"

    assert main(["call", "+14155550177", "--server", server_url, "--digits", digits]) == 1

    captured = capsys.readouterr()
    assert "< The card was declined by the bank." in captured.out
    assert "no successful payment" in captured.err
    assert read_session(created["session_id"])["status"] == "payment-failed"
