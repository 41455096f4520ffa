"""Migrations: the dashboard revision renames stored settings to the API's names, both ways, and
the migrated schema is exactly the models' (on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from paydial.migrate import alembic_config
from payments.project_settings import ProjectSettings
from payments.store import Base
from tests.conftest import scratch_postgres

OLD_SETTINGS = {"merchant_name": "Acme Tickets", "require_zip": True, "max_payment_attempts": 5}


@pytest.fixture(params=["sqlite", "postgresql"])
def blank_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, for migrating step by step."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'blank.db'}"
        return
    yield from scratch_postgres("paydial_migrate")


def stored_settings(url: str) -> dict[str, object]:
    engine = create_engine(url)
    with engine.connect() as connection:
        raw = connection.execute(text("SELECT settings FROM projects")).scalar_one()
    engine.dispose()
    return raw if isinstance(raw, dict) else json.loads(raw)


def test_old_setting_names_are_renamed_on_upgrade_and_back_on_downgrade(
    blank_database: str,
) -> None:
    config = alembic_config(blank_database)
    command.upgrade(config, "0002")
    engine = create_engine(blank_database)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO accounts (id, name, created_at) VALUES ('a', 'Acme', :now)"),
            {"now": "2026-11-21 12:00:00+00:00"},
        )
        connection.execute(
            text(
                "INSERT INTO projects (id, account_id, slug, name, settings, created_at) "
                "VALUES ('p', 'a', 'acme', 'acme', :settings, :now)"
            ),
            {"settings": json.dumps(OLD_SETTINGS), "now": "2026-11-21 12:00:00+00:00"},
        )
    engine.dispose()

    command.upgrade(config, "dashboard")
    upgraded = stored_settings(blank_database)
    assert upgraded == {
        "display_name": "Acme Tickets",
        "require_postal_code": True,
        "max_payment_attempts": 3,
    }
    assert ProjectSettings.model_validate(upgraded).display_name == "Acme Tickets"

    command.downgrade(config, "0002")
    assert stored_settings(blank_database) == OLD_SETTINGS | {"max_payment_attempts": 3}


def test_the_migrated_schema_is_exactly_the_models(blank_database: str) -> None:
    command.upgrade(alembic_config(blank_database), "head")
    engine = create_engine(blank_database)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []


def test_a_project_event_needs_no_session_and_goes_on_downgrade_with_its_deliveries(
    blank_database: str,
) -> None:
    config = alembic_config(blank_database)
    command.upgrade(config, "breaker")
    now = "2026-11-30 12:00:00+00:00"
    engine = create_engine(blank_database)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO accounts (id, name, created_at) VALUES ('a', 'Acme', :now)"),
            {"now": now},
        )
        connection.execute(
            text(
                "INSERT INTO projects (id, account_id, slug, name, settings, created_at) "
                "VALUES ('p', 'a', 'acme', 'acme', '{}', :now)"
            ),
            {"now": now},
        )
        connection.execute(
            text(
                "INSERT INTO webhook_events (id, project_id, session_id, type, payload, "
                "created_at, delivered, attempts) VALUES ('evt_1', 'p', NULL, "
                "'widget-charges-paused', '{}', :now, true, 1)"
            ),
            {"now": now},
        )
        connection.execute(
            text(
                "INSERT INTO webhook_deliveries (id, event_id, attempt, url, created_at) "
                "VALUES ('d', 'evt_1', 1, 'https://shop.example.com/hooks', :now)"
            ),
            {"now": now},
        )
    command.downgrade(config, "breaker-1")
    with engine.connect() as connection:
        counts = [
            connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()  # noqa: S608
            for table in ("webhook_events", "webhook_deliveries")
        ]
    engine.dispose()
    assert counts == [0, 0]
    command.upgrade(config, "head")


def test_open_sessions_that_share_an_access_code_keep_it_on_one_and_draw_new_ones_on_upgrade(
    blank_database: str,
) -> None:
    """Before the unique index, two sessions created at once could draw the same code; the
    upgrade must still build the index, keeping the code where a call is on it (else on the
    oldest) and leaving ended sessions alone."""
    config = alembic_config(blank_database)
    command.upgrade(config, "totp_replay")
    engine = create_engine(blank_database)
    sessions = [  # id, status, call_sid, created (minute), access code
        ("s-old", "pending", None, 1, "123456"),
        ("s-on-a-call", "collecting", "CA1", 2, "123456"),
        ("s-new", "pending", None, 3, "123456"),
        ("s-ended", "cancelled", None, 0, "123456"),
        ("s-b1", "pending", None, 1, "654321"),
        ("s-b2", "pending", None, 2, "654321"),
        ("s-alone", "pending", None, 1, "111111"),
    ]
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO accounts (id, name, created_at) VALUES ('a', 'Acme', :now)"),
            {"now": "2026-11-30 12:00:00+00:00"},
        )
        connection.execute(
            text(
                "INSERT INTO projects (id, account_id, slug, name, settings, created_at) "
                "VALUES ('p', 'a', 'acme', 'acme', '{}', '2026-11-30 12:00:00+00:00')"
            )
        )
        for session_id, status, call_sid, minute, code in sessions:
            connection.execute(
                text(
                    "INSERT INTO sessions (id, account_id, project_id, environment, channel, "
                    "status, amount_cents, currency, mode, gateway, access_code, call_sid, "
                    "attempt_count, created_at, updated_at, expires_at) VALUES (:id, 'a', 'p', "
                    "'test', 'voice', :status, 1500, 'USD', 'charge', 'stripe', :code, :call_sid, "
                    "0, :at, :at, '2026-11-30 13:00:00+00:00')"
                ),
                {
                    "id": session_id,
                    "status": status,
                    "code": code,
                    "call_sid": call_sid,
                    "at": f"2026-11-30 12:{minute:02d}:00+00:00",
                },
            )

    command.upgrade(config, "head")

    with engine.connect() as connection:
        codes = dict(connection.execute(text("SELECT id, access_code FROM sessions")).all())
    engine.dispose()
    kept = {"s-on-a-call": "123456", "s-ended": "123456", "s-b1": "654321", "s-alone": "111111"}
    assert {key: codes[key] for key in kept} == kept
    redrawn = [codes["s-old"], codes["s-new"], codes["s-b2"]]
    assert all(len(code) == 6 and code.isdigit() for code in redrawn)
    open_codes = [code for key, code in codes.items() if key != "s-ended"]
    assert len(set(open_codes)) == len(open_codes)
