"""Schema migrations (Alembic): `paydial db upgrade`, the Procfile release step, the tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from payments.store import create_private_sqlite_file

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str) -> None:
    create_private_sqlite_file(database_url)
    command.upgrade(alembic_config(database_url), "head")
