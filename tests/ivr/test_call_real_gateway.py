"""A whole phone payment through the real Stripe SDK, talking to localstripe over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ivr.phone import Phone, ScriptedKeypad
from payments.accounts import get_project_by_slug
from payments.credentials import CREDENTIALS_PURPOSE, set_credentials
from payments.model import Environment, Gateway
from payments.services import Services
from tests.ivr.conftest import APPROVED, CVV, EXPIRY

CALLBACK = "+14155550199"


@pytest.fixture
def stripe_sandbox(services: Services, merchant: dict[str, str], localstripe_url: str) -> None:
    """Project 'acme' gets test-mode Stripe credentials pointing at localstripe."""
    with services.db.transaction() as tx:
        set_credentials(
            tx,
            get_project_by_slug(tx, "acme"),
            Gateway.STRIPE,
            Environment.TEST,
            {"secret_key": "sk_test_paydial", "api_base": localstripe_url},
            sealer=services.sealer(CREDENTIALS_PURPOSE),
            now=services.clock(),
        )


@pytest.mark.parametrize("mode", ["charge", "tokenize"])
def test_a_keypad_payment_goes_through_stripe_and_records_its_ids(
    stripe_sandbox: None,
    mode: str,
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    # localstripe refuses descriptions on intents and customers
    created = new_session(mode=mode, callback=CALLBACK, description=None)
    result = phone(to=created["sip_uri"]).call(ScriptedKeypad([APPROVED + "#", EXPIRY, CVV, "1"]))

    session = read_session(created["session_id"])
    assert session["status"] == "payment-success", result.heard
    assert (session["card_brand"], session["card_last4"]) == ("visa", "4242")
    processor = session["processor"]
    assert processor["payment_method_id"].startswith("pm_")
    if mode == "charge":
        assert processor["stripe_payment_intent_id"].startswith("pi_")
        assert processor["stripe_charge_id"].startswith("ch_")
    else:
        assert processor["stripe_customer_id"].startswith("cus_")
    assert result.dialed == [CALLBACK]
