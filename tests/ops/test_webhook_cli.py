"""`paydial webhook set` and `rotate-secret`: a `whsec_` secret shown once, stored only sealed."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from paydial.cli import main
from payments.accounts import get_project_by_slug
from payments.model import Channel, Environment, Gateway, PaymentMode, Status
from payments.sessions import NewSession, create_session, transition
from payments.store import PaymentSession, Project, SettingChange, WebhookEvent


def secrets_in(text: str) -> list[str]:
    return re.findall(r"whsec_[A-Za-z0-9_-]{40,}", text)


def test_the_secret_is_printed_once_and_rotation_replaces_it(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["project", "create", "shop"]) == 0
    assert main(["webhook", "set", "shop", "https://shop.example.com/hooks"]) == 0
    [first] = secrets_in(capsys.readouterr().out)
    assert main(["webhook", "set", "shop", "https://shop.example.com/v2/hooks"]) == 0
    assert secrets_in(capsys.readouterr().out) == []  # a URL change keeps the secret
    assert main(["webhook", "rotate-secret", "shop"]) == 0
    [second] = secrets_in(capsys.readouterr().out)
    assert second != first

    engine = create_engine(cli_env)
    with engine.connect() as connection:
        url, sealed = connection.execute(
            select(Project.webhook_url, Project.webhook_secret_sealed)
        ).one()
        audit = connection.execute(
            select(SettingChange.actor, SettingChange.old, SettingChange.new).where(
                SettingChange.setting == "webhook_secret"
            )
        ).all()
    engine.dispose()
    assert url == "https://shop.example.com/v2/hooks"
    assert second.encode() not in sealed and first.encode() not in sealed
    assert audit == [("command line", "set", "rotated")], "the rotation is audited, not its value"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://shop.example.com",
        "http://shop.example.com/hooks",
        "http://10.0.0.5/hooks",
        "https://",
    ],
)
def test_a_url_that_is_not_https_or_loopback_http_is_refused_with_the_rule(
    cli_env: str, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    main(["project", "create", "shop"])
    capsys.readouterr()
    assert main(["webhook", "set", "shop", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("paydial: webhook_url: ")
    assert err.endswith(
        "The webhook URL must be https://; http:// is accepted only on a loopback host "
        "(localhost, 127.0.0.1, ::1), and then only test-mode events are sent to it\n"
    )


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9000/hooks", "http://localhost:9000/hooks", "http://[::1]/hooks"]
)
def test_http_on_a_loopback_host_is_accepted_for_test_mode_events_only(
    cli_env: str, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    main(["project", "create", "shop"])
    main(["gateway", "set", "shop", "stripe", "--mode", "live", "secret_key=sk_live_never_called"])
    capsys.readouterr()
    assert main(["webhook", "set", "shop", url]) == 0
    out = capsys.readouterr().out
    assert f"webhooks for shop go to {url}\n" in out
    assert "(http on a loopback host: only test-mode events are sent there)" in out

    engine = create_engine(cli_env)
    now = datetime.now(UTC)
    with Session(engine) as tx, tx.begin():
        project = get_project_by_slug(tx, "shop")
        for environment in (Environment.TEST, Environment.LIVE):
            session = create_session(
                tx,
                account_id=project.account_id,
                environment=environment,
                now=now,
                new=NewSession(
                    project="shop",
                    amount_cents=100,
                    mode=PaymentMode.CHARGE,
                    gateway=Gateway.STRIPE,
                    channel=Channel.CHAT,
                    ttl=timedelta(minutes=5),
                ),
            )
            transition(tx, session, Status.PAYMENT_FAILED, cause="test", now=now)
    with engine.connect() as connection:
        recorded = connection.execute(
            select(PaymentSession.environment).join(
                WebhookEvent, WebhookEvent.session_id == PaymentSession.id
            )
        ).all()
    engine.dispose()
    # both are kept; the live one waits for an https URL (tests/ops/test_webhooks.py sends them)
    assert sorted(recorded) == [("live",), ("test",)]
