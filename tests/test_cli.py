"""The `paydial` command: serve, projects, keys, gateway credentials, migrations."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, inspect, select

from paydial.cli import main
from payments.credentials import load_credentials
from payments.crypto import Sealer
from payments.store import GatewayCredential, Project
from tests.conftest import TEST_SECRET_KEY, free_port


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_project_and_key_commands(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "project", "create", "shop")
    assert status == 0 and re.fullmatch(r"[0-9a-f-]{36}\n", out)
    status, key, _ = run(capsys, "key", "create", "shop", "--mode", "live")
    assert status == 0
    assert re.fullmatch(r"mvn_live_[A-Za-z0-9]{32}\n", key), "the key and nothing else on stdout"
    status, _, err = run(capsys, "project", "create", "shop")
    assert status == 1 and "already exists" in err
    status, _, err = run(capsys, "key", "create", "nope", "--mode", "test")
    assert status == 1 and "no project 'nope'" in err
    status, out, _ = run(capsys, "key", "revoke", key[:17])
    assert status == 0 and key[:17] in out
    status, _, err = run(capsys, "key", "revoke", "mvn_live_unknown")
    assert status == 1


def test_project_create_with_an_account_shares_it(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "project", "create", "one", "--account", "Acme")
    run(capsys, "project", "create", "two", "--account", "Acme")
    run(capsys, "project", "create", "three")
    engine = create_engine(cli_env)
    with engine.connect() as connection:
        accounts = dict(connection.execute(select(Project.slug, Project.account_id)).all())
    engine.dispose()
    assert accounts["one"] == accounts["two"] != accounts["three"]


def test_gateway_set_seals_credentials_and_never_prints_them(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "project", "create", "shop")
    status, out, err = run(
        capsys, "gateway", "set", "shop", "stripe", "--mode", "test", "secret_key=sk_test_SECRET123"
    )
    assert status == 0 and "sk_test_SECRET123" not in out + err
    status, _, err = run(capsys, "gateway", "set", "shop", "authorizenet", "--mode", "live", "x=1")
    assert status == 1 and "api_login_id" in err
    status, _, err = run(capsys, "gateway", "set", "shop", "stripe", "--mode", "live", "oops")
    assert status == 1 and "KEY=VALUE" in err
    engine = create_engine(cli_env)
    with engine.connect() as connection:
        sealed = connection.execute(select(GatewayCredential.sealed)).scalar_one()
        project_id = connection.execute(select(Project.id)).scalar_one()
    assert b"SECRET123" not in sealed
    from sqlalchemy.orm import Session

    with Session(engine) as tx:
        values = load_credentials(
            tx, project_id, "stripe", "test", sealer=Sealer(TEST_SECRET_KEY, "gateway-credentials")
        )
    engine.dispose()
    assert values == {"secret_key": "sk_test_SECRET123"}


def test_db_upgrade_creates_the_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    assert run(capsys, "db", "upgrade")[0] == 0
    engine = create_engine(url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"accounts", "projects", "api_keys", "sessions", "session_events"} <= tables


def test_serve_runs_on_embedded_defaults_prints_a_test_key_once_and_keeps_its_files_private(
    tmp_path: Path,
) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "PAYDIAL_SECRET_KEY", "TWILIO_AUTH_TOKEN"}
    }
    port = free_port()
    env["PORT"] = str(port)

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "paydial.cli", "serve"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_ready() -> None:
        deadline = time.monotonic() + 60  # a process start on a loaded machine
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=5).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise AssertionError("server did not come up")

    server = start()
    try:
        wait_ready()
        body = {
            "project": "demo",
            "caller": "+14155552671",
            "amount": 1,
            "mode": "charge",
            "gateway": "stripe",
        }
        server.terminate()
        output, _ = server.communicate(timeout=60)
    finally:
        server.kill()
    key = re.search(r"mvn_test_[A-Za-z0-9]{32}", output)
    assert key, output
    assert (tmp_path / "paydial.db").exists(), "the SQLite file lives in the working directory"
    for name in ("paydial.db", "paydial-local.json"):  # card metadata, keys, secrets: owner only
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name

    server = start()
    try:
        wait_ready()
        created = requests.post(
            f"http://127.0.0.1:{port}/v1/sessions",
            json=body,
            headers={"Authorization": f"Bearer {key.group(0)}"},
            timeout=5,
        )
        assert created.status_code == 201
        server.terminate()
        output, _ = server.communicate(timeout=60)
    finally:
        server.kill()
    assert "mvn_test_" not in output, "a fresh key is printed on first start only"
