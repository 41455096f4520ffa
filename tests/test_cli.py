"""The `paydial` command: serve, projects, keys, gateway credentials, migrations."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, inspect, select, update
from sqlalchemy.orm import Session

from paydial.cli import main
from payments.credentials import load_credentials
from payments.crypto import Sealer
from payments.store import ApiKey, GatewayCredential, Project, VelocityEvent
from payments.velocity import record_failure
from tests.conftest import TEST_SECRET_KEY, free_port


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_project_and_key_commands(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "project", "create", "shop")
    assert status == 0
    assert re.fullmatch(
        r"Created project 'shop' \(id [0-9a-f-]{36}\) in account 'shop'\.\n"
        r"Next: paydial key create shop --mode test\n",
        out,
    )
    status, key, _ = run(capsys, "key", "create", "shop", "--mode", "live")
    assert status == 0
    assert re.fullmatch(r"mvn_live_[A-Za-z0-9]{32}\n", key), "the key and nothing else on stdout"
    status, _, err = run(capsys, "project", "create", "shop")
    assert status == 1 and "already exists" in err
    status, _, err = run(capsys, "key", "create", "nope", "--mode", "test")
    assert status == 1 and "no project 'nope'" in err
    status, out, _ = run(capsys, "key", "revoke", key[:12])
    assert status == 0 and f"revoked {key[:17]}" in out
    status, _, err = run(capsys, "key", "revoke", "mvn_live_unknown")
    assert status == 1 and "no key starts with 'mvn_live_unknown'" in err


def test_key_revoke_takes_any_unambiguous_prefix_and_names_the_keys_an_ambiguous_one_matches(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "project", "create", "shop")
    keys = [run(capsys, "key", "create", "shop", "--mode", "test")[1].strip() for _ in range(3)]
    engine = create_engine(cli_env)
    with engine.begin() as connection:  # known prefixes, two of them sharing 14 characters
        for key, prefix in zip(keys, ["AAAA0001", "ZZZZZ111", "ZZZZZ222"], strict=True):
            connection.execute(
                update(ApiKey).where(ApiKey.prefix == key[:17]).values(prefix=f"mvn_test_{prefix}")
            )
    engine.dispose()

    status, _, err = run(capsys, "key", "revoke", "mvn_test_AA")
    assert status == 1 and "at least 12 characters" in err
    status, _, err = run(capsys, "key", "revoke", "mvn_test____")  # `_` is no wildcard
    assert status == 1 and "no key starts with 'mvn_test____'" in err
    status, _, err = run(capsys, "key", "revoke", keys[0][:20])
    assert status == 1 and "first 17 characters, or the whole key" in err

    status, out, _ = run(capsys, "key", "revoke", "mvn_test_AAA")
    assert status == 0 and out == "revoked mvn_test_AAAA0001… (test)\n"
    status, out, _ = run(capsys, "key", "revoke", keys[2])  # the whole key, found by its hash
    assert status == 0 and "revoked mvn_test_ZZZZZ222" in out

    status, _, err = run(capsys, "key", "revoke", "mvn_test_ZZZZZ")
    assert status == 1
    assert (
        "'mvn_test_ZZZZZ' matches 2 keys: mvn_test_ZZZZZ111 (test), "
        "mvn_test_ZZZZZ222 (test, revoked); give more characters"
    ) in err
    status, out, _ = run(capsys, "key", "revoke", "mvn_test_ZZZZZ1")
    assert status == 0 and "revoked mvn_test_ZZZZZ111" in out


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
    env["PAYDIAL_HOME"] = str(tmp_path / "home")
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
    # card metadata, keys, secrets: owner only
    for path in (tmp_path / "paydial.db", tmp_path / "home" / "paydial-local.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

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
    assert (
        "Project 'demo' exists; its test key was shown on first start. "
        "Make another with `paydial key create demo --mode test`."
    ) in output


def test_serve_in_production_mode_without_secrets_names_them_in_one_line_and_exits_2(
    tmp_path: Path,
) -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in {"PAYDIAL_SECRET_KEY", "TWILIO_AUTH_TOKEN"}
    }
    env |= {"DATABASE_URL": "postgresql+psycopg://paydial@127.0.0.1:1/paydial"}
    done = subprocess.run(
        [sys.executable, "-m", "paydial.cli", "serve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(
        "paydial: PAYDIAL_SECRET_KEY and TWILIO_AUTH_TOKEN must be set: with PostgreSQL or Redis"
    )
    assert done.stderr.count("\n") == 1, "one line, no traceback"

    env["PAYDIAL_SECRET_KEY"] = TEST_SECRET_KEY
    done = subprocess.run(
        [sys.executable, "-m", "paydial.cli", "serve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("paydial: TWILIO_AUTH_TOKEN must be set")


def test_importing_the_command_line_loads_no_database_sdk_or_web_framework() -> None:
    """`paydial --help` and `paydial call` start fast because commands import what they use."""
    heavy = ("sqlalchemy", "alembic", "pydantic", "flask", "stripe", "braintree", "authorizenet")
    probe = (
        "import sys\n"
        "from paydial.cli import build_parser, main\n"
        "build_parser()\n"
        "main(['call', '+14155550100', '--server', 'http://127.0.0.1:9'])\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=os.environ | {"TWILIO_AUTH_TOKEN": "x"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "cannot be reached" in done.stderr
    assert done.stdout == "[]\n"


def test_paydial_call_without_any_secrets_yet_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TWILIO_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("PAYDIAL_HOME", str(tmp_path / "empty-home"))
    status, _, err = run(capsys, "call", "+14155550100", "--server", "http://127.0.0.1:9")
    assert status == 1
    assert f"no TWILIO_AUTH_TOKEN and no {tmp_path / 'empty-home' / 'paydial-local.json'}" in err
    assert "`paydial serve` creates that file on first start" in err
    assert not (tmp_path / "empty-home").exists(), "a phone never invents the server's secrets"


class Serve:
    """`paydial serve` in a directory of its own, with the environment a new user has."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "paydial.cli", "serve", "--port", str(port)],
            cwd=cwd,
            env=env | {"PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        self.lines: list[str] = []
        for line in self.process.stdout:  # blocks until serve prints; it prints before serving
            self.lines.append(line)
            if line.startswith("Paydial on"):
                break
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{self.url}/health", timeout=5).ok:
                    return
            except requests.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise AssertionError("".join(self.lines)) from None
                time.sleep(0.1)

    @property
    def key(self) -> str:
        found = re.search(r"mvn_test_[A-Za-z0-9]{32}", "".join(self.lines))
        assert found, self.lines
        return found.group(0)

    def stop(self) -> None:
        self.process.terminate()
        self.process.communicate(timeout=30)


def test_paydial_call_from_another_directory_finds_the_servers_secrets_or_explains_a_403(
    tmp_path: Path,
) -> None:
    """The README's two terminals: serve in one directory, call from any other."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "DATABASE_URL",
            "REDIS_URL",
            "PAYDIAL_SECRET_KEY",
            "TWILIO_AUTH_TOKEN",
            "PAYDIAL_HOME",
            "PAYDIAL_PUBLIC_URL",
        }
    }
    env["XDG_DATA_HOME"] = str(tmp_path / "user-data")  # the per-user data directory, on Linux
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    server = Serve(tmp_path / "one", env)
    try:
        created = requests.post(
            f"{server.url}/v1/sessions",
            json={
                "project": "demo",
                "caller": "+14155550100",
                "amount": "150.00",
                "mode": "charge",
                "gateway": "stripe",
            },
            headers={"Authorization": f"Bearer {server.key}"},
            timeout=30,
        )
        assert created.status_code == 201
        session_id = created.json()["session_id"]

        def call(**extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "paydial.cli",
                    "call",
                    session_id,
                    "--server",
                    server.url,
                    "--digits",
                    "4242424242424242#1230#123#1",
                ],
                cwd=tmp_path / "two",
                env=env | extra,
                capture_output=True,
                text=True,
                timeout=120,
            )

        refused = call(TWILIO_AUTH_TOKEN="not-the-servers-token")
        assert refused.returncode == 1
        assert (
            "the server refused the call's Twilio signature (403): it uses different "
            "secrets" in refused.stderr
        )
        assert "with the token from TWILIO_AUTH_TOKEN" in refused.stderr

        paid = call()
        assert paid.returncode == 0, paid.stdout + paid.stderr
        assert "< Your payment was approved." in paid.stdout
    finally:
        server.stop()
    assert (tmp_path / "user-data" / "paydial" / "paydial-local.json").exists()
    assert not (tmp_path / "two" / "paydial-local.json").exists()
    assert not (tmp_path / "one" / "paydial-local.json").exists()


def test_velocity_reset_test_forgets_test_mode_failures_only(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = create_engine(cli_env)
    now = datetime.now(UTC)
    with Session(engine) as tx, tx.begin():
        record_failure(tx, caller="+14155550100", card="abc", environment="test", now=now)
        record_failure(tx, caller="+14155550101", card=None, environment="live", now=now)
    status, out, _ = run(capsys, "velocity", "reset", "--test")
    assert status == 0
    assert out == "forgot 2 failed test-mode payment attempts; live counters are unchanged\n"
    with engine.connect() as connection:
        left = connection.execute(select(VelocityEvent.subject, VelocityEvent.environment)).all()
    engine.dispose()
    assert left == [("caller:+14155550101", "live")]
    with pytest.raises(SystemExit):
        main(["velocity", "reset"])  # live counters are never reset from here
