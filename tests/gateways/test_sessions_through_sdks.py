"""A session's payment runs through each vendor SDK against its local counterpart.

`payments.attempts.pay` with the project's sealed credentials pointing at a local server: the
session ends in the right status with PRODUCT.md's `processor` fields of that gateway filled in.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer

from gateways.base import Card
from payments.accounts import get_project_by_slug
from payments.attempts import pay
from payments.credentials import CREDENTIALS_PURPOSE, set_credentials
from payments.model import Channel, Environment, Gateway, PaymentMode, Status
from payments.services import Services
from payments.sessions import NewSession, create_session
from payments.store import PaymentSession
from tests.gateways.test_authorizenet_gateway import PATH as ANET_PATH
from tests.gateways.test_authorizenet_gateway import PROFILE_OK, anet, transaction_answer
from tests.gateways.test_braintree_gateway import MERCHANT, SETTLING, bt
from tests.gateways.test_shift4_gateway import CHARGE, s4

CARD = Card("4242424242424242", 12, 2031, "987")


@pytest.fixture
def open_session(services: Services, make_project: Callable[..., str]) -> Callable[..., str]:
    """A test-mode session of project 'shop' whose gateway credentials point at `base_url`."""
    make_project("shop")

    def make(gateway: Gateway, mode: PaymentMode, credentials: dict[str, str]) -> str:
        with services.db.transaction() as tx:
            project = get_project_by_slug(tx, "shop")
            set_credentials(
                tx,
                project,
                gateway,
                Environment.TEST,
                credentials,
                sealer=services.sealer(CREDENTIALS_PURPOSE),
                now=services.clock(),
            )
            session = create_session(
                tx,
                account_id=project.account_id,
                environment=Environment.TEST,
                now=services.clock(),
                new=NewSession(
                    project="shop",
                    amount_cents=1999,
                    mode=mode,
                    gateway=gateway,
                    channel=Channel.VOICE,
                    ttl=timedelta(minutes=30),
                    caller="+14155550100",
                ),
            )
            return session.id

    return make


def finished(services: Services, session_id: str) -> PaymentSession:
    with services.db.transaction() as tx:
        return tx.get_one(PaymentSession, session_id)


def anet_credentials(httpserver: HTTPServer) -> dict[str, str]:
    return {
        "api_login_id": "login",
        "transaction_key": "key",
        "api_base": httpserver.url_for(ANET_PATH),
    }


@pytest.mark.parametrize(
    ("authorize_only", "status"),
    [(False, Status.PAYMENT_SUCCESS), (True, Status.PAYMENT_AUTHORIZED)],
)
def test_authorizenet_charges_or_authorizes_a_session(
    services: Services,
    open_session: Callable[..., str],
    httpserver: HTTPServer,
    authorize_only: bool,
    status: Status,
    client: FlaskClient,
    make_key: Callable[..., str],
) -> None:
    httpserver.expect_request(ANET_PATH, method="POST").respond_with_response(
        anet(transaction_answer(trans_id="60099"))
    )
    session_id = open_session(
        Gateway.AUTHORIZENET, PaymentMode.CHARGE, anet_credentials(httpserver)
    )
    changed = client.patch(
        "/v1/projects/shop",
        json={"authorize_only": authorize_only},
        headers={"Authorization": f"Bearer {make_key('shop')}"},
    )
    assert changed.status_code == 200 and changed.get_json()["authorize_only"] is authorize_only

    outcome = pay(services, session_id, CARD)

    sent = httpserver.log[0][0].get_data()
    kind = b"authOnlyTransaction" if authorize_only else b"authCaptureTransaction"
    assert kind in sent
    session = finished(services, session_id)
    assert outcome.approved and session.status == status
    assert session.processor is not None
    assert session.processor["authnet_transaction_id"] == "60099"
    assert session.processor["authnet_auth_code"] == "ABC123"
    assert (
        session.processor["authnet_avs_result_code"],
        session.processor["authnet_cvv_result_code"],
    ) == ("Y", "M")
    assert (session.card_brand, session.card_last4) == ("visa", "4242")


def test_authorizenet_saves_a_card_in_tokenize_mode(
    services: Services, open_session: Callable[..., str], httpserver: HTTPServer
) -> None:
    httpserver.expect_request(ANET_PATH, method="POST").respond_with_response(anet(PROFILE_OK))
    session_id = open_session(
        Gateway.AUTHORIZENET, PaymentMode.TOKENIZE, anet_credentials(httpserver)
    )

    pay(services, session_id, CARD)

    session = finished(services, session_id)
    assert session.status == Status.PAYMENT_SUCCESS
    assert session.processor is not None
    assert session.processor["authnet_customer_profile_id"] == "900001"
    assert session.processor["authnet_payment_profile_id"] == "800001"


def test_braintree_charges_a_session(
    services: Services, open_session: Callable[..., str], httpserver: HTTPServer
) -> None:
    httpserver.expect_request(MERCHANT + "/transactions").respond_with_response(bt(SETTLING))
    session_id = open_session(
        Gateway.BRAINTREE,
        PaymentMode.CHARGE,
        {
            "merchant_id": "mid",
            "public_key": "pub",
            "private_key": "priv",
            "api_base": httpserver.url_for("").rstrip("/"),
        },
    )

    pay(services, session_id, CARD)

    session = finished(services, session_id)
    assert session.status == Status.PAYMENT_SUCCESS
    assert session.processor is not None
    assert session.processor["braintree_transaction_id"] == "bt7x2k9q"


def test_shift4_charges_a_session(
    services: Services, open_session: Callable[..., str], httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/charges").respond_with_response(s4(CHARGE))
    session_id = open_session(
        Gateway.SHIFT4,
        PaymentMode.CHARGE,
        {"secret_key": "sk_test_s4", "api_base": httpserver.url_for("").rstrip("/")},
    )

    pay(services, session_id, CARD)

    session = finished(services, session_id)
    assert session.status == Status.PAYMENT_SUCCESS
    assert session.processor is not None
    assert session.processor["shift4_charge_id"] == "char_9kQx"


def test_a_decline_through_an_sdk_leaves_the_session_open_for_another_card(
    services: Services, open_session: Callable[..., str], httpserver: HTTPServer
) -> None:
    httpserver.expect_request(ANET_PATH, method="POST").respond_with_response(
        anet(transaction_answer(response_code="2", error_code="2"))
    )
    session_id = open_session(
        Gateway.AUTHORIZENET, PaymentMode.CHARGE, anet_credentials(httpserver)
    )

    outcome = pay(services, session_id, CARD)

    assert not outcome.approved and outcome.error_code == "card_declined"
    assert outcome.attempts_remaining == 2
    assert finished(services, session_id).status == Status.COLLECTING
