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
