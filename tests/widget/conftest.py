"""Builders for widget tests: chat sessions through the core, and the frame's CSRF token."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from payments.accounts import get_project_by_slug
from payments.model import Channel, Environment, Gateway, PaymentMode
from payments.services import Services
from payments.sessions import NewSession, create_session

APPROVED = "4242424242424242"
DECLINED = "4000000000000002"


def new_widget_session(
    services: Services,
    slug: str,
    *,
    environment: str = "test",
    amount_cents: int = 1250,
    channel: Channel = Channel.CHAT,
    description: str | None = "Two concert tickets",
) -> str:
    """A session created the way the merchant endpoint creates one; returns its id."""
    with services.db.transaction() as tx:
        project = get_project_by_slug(tx, slug)
        session = create_session(
            tx,
            account_id=project.account_id,
            environment=Environment(environment),
            now=services.clock(),
            new=NewSession(
                project=slug,
                amount_cents=amount_cents,
                mode=PaymentMode.CHARGE,
                gateway=Gateway.STRIPE,
                channel=channel,
                ttl=timedelta(minutes=services.settings.widget_ttl_minutes),
                description=description,
                caller="+14155550100" if channel is Channel.VOICE else None,
            ),
        )
        return session.id


@pytest.fixture
def make_widget_session(services: Services, make_project: Callable[..., str]) -> Callable[..., str]:
    """A chat session for `slug` (the project is created on first use)."""
    made: set[str] = set()

    def make(slug: str = "shop", **options: Any) -> str:
        if slug not in made:
            make_project(slug)
            made.add(slug)
        return new_widget_session(services, slug, **options)

    return make


def frame_csrf(client: FlaskClient, session_id: str) -> str:
    """The CSRF token as the browser gets it: from the frame's HTML."""
    html = client.get(f"/widget/{session_id}").get_data(as_text=True)
    found = re.search(r'data-csrf="([0-9a-f]+)"', html)
    assert found, "the frame carries no CSRF token"
    return found.group(1)
