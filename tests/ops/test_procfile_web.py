"""The Procfile's `web` command as written, run by bash: its access log and its body limit, and
what its settings have each worker do once it has loaded the app.

The command line is read from the Procfile itself, so a change there is what gets tested. The
start-up wait follows the process (its exit fails at once) and allows it 90 seconds.
"""

from __future__ import annotations

import contextlib
import gc
import http.client
import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from flask import Flask

from payments.services import Services
from tests.conftest import free_port, process_env

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 90  # seconds; a loaded machine boots gunicorn slowly
CARD = "4242424242424242"


def procfile_command(process: str) -> str:
    for line in (REPO / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process:
            return command.strip()
    raise AssertionError(f"the Procfile has no {process!r} process")


@dataclass
class Web:
    port: int
    output: Path
    process: subprocess.Popen[bytes]

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the web process exited: {self.output.read_text()}")
            try:
                with contextlib.closing(self.connect()) as connection:
                    connection.request("GET", "/health")
                    if connection.getresponse().status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        pytest.fail("the web process did not answer /health")

    def stop(self) -> str:
        """Graceful shutdown; everything it wrote (access log on stdout, errors on stderr)."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)
        return self.output.read_text()


@pytest.fixture
def web(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[Web]:
    port, output = free_port(), tmp_path / "web.log"
    env = process_env(database_url, redis_url, PORT=str(port), WEB_CONCURRENCY="1")
    # Side-by-side test runs would share gunicorn's per-user control socket path.
    command = procfile_command("web") + " --no-control-socket"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"], cwd=REPO, env=env, stdout=sink, stderr=sink
        )
    server = Web(port, output, process)
    try:
        server.wait_until_up()
        yield server
    finally:
        server.stop()


@pytest.mark.redis
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_card_number_in_a_url_is_masked_in_the_access_log(
    web: Web, merchant: dict[str, str]
) -> None:
    spaced = "4242-4242-4242-4242"
    with contextlib.closing(web.connect()) as connection:  # gthread keeps connections alive
        connection.request(
            "GET",
            f"/v1/sessions?caller={CARD}&note={spaced}&order=12345678",
            headers={"Authorization": merchant["test"]},
        )
        assert connection.getresponse().status == 422
    output = web.stop()
    [line] = [line for line in output.splitlines() if "/v1/sessions?" in line]
    assert CARD not in output and spaced not in output
    assert "caller=[redacted card number]" in line
    assert "order=12345678" in line  # numbers that are not card numbers stay readable


@pytest.mark.redis
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_chunked_body_over_the_limit_is_a_413_with_the_json_error_body(
    web: Web, merchant: dict[str, str]
) -> None:
    connection = web.connect()
    connection.putrequest("POST", "/v1/sessions")
    connection.putheader("Authorization", merchant["test"])
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    chunk = b" " * 65536
    with contextlib.suppress(OSError):  # the server may answer and close before reading it all
        connection.send(b"1\r\n{\r\n")
        for _ in range(20):  # 1.25 MiB, over the 1 MiB limit
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        connection.send(b"1\r\n}\r\n0\r\n\r\n")
    streamed = connection.getresponse()
    assert streamed.status == 413
    assert streamed.getheader("Content-Type") == "application/json"
    body = json.loads(streamed.read())
    connection.close()
    # The same answer as for a body that says its length up front.
    sized = web.connect()
    with contextlib.suppress(OSError):  # answered and closed before the body was all sent
        sized.request(
            "POST",
            "/v1/sessions",
            b"{" + chunk * 20 + b"}",
            {"Authorization": merchant["test"], "Content-Type": "application/json"},
        )
    answer = sized.getresponse()
    assert (answer.status, json.loads(answer.read())) == (413, body)
    sized.close()
    assert set(body) == {"detail"} and body["detail"]


def test_each_web_worker_opens_its_pool_and_freezes_what_it_built_once_its_app_is_loaded(
    app: Flask, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gunicorn's own parser reads the command's settings; its post-worker-init hook runs here,
    handed a worker that has loaded `app` (gunicorn's Worker keeps it as `wsgi`)."""
    from gunicorn.app.wsgiapp import WSGIApplication

    command = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", procfile_command("web"))  # the defaults
    monkeypatch.setattr(sys, "argv", shlex.split(command))
    hook = WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]").cfg.post_worker_init
    pool = services.db.engine.pool
    frozen = gc.get_freeze_count()
    try:
        hook(SimpleNamespace(wsgi=app))
        assert gc.get_freeze_count() > frozen
    finally:
        gc.unfreeze()
    if services.db.engine.dialect.name == "postgresql":  # SQLite opens a file, not a backend
        size = services.settings.database_pool_size
        assert pool.checkedin() == pool.size() == size  # type: ignore[attr-defined]
