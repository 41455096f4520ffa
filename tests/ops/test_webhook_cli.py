"""`paydial webhook set` and `rotate-secret`: a `whsec_` secret shown once, stored only sealed."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import create_engine, select

from paydial.cli import main
from payments.store import Project


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
    engine.dispose()
    assert url == "https://shop.example.com/v2/hooks"
    assert second.encode() not in sealed and first.encode() not in sealed


def test_a_url_that_is_not_http_is_refused(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["project", "create", "shop"])
    assert main(["webhook", "set", "shop", "ftp://shop.example.com"]) == 1
    assert "https://" in capsys.readouterr().err
