"""Rate limits across real gunicorn workers, configured only through the environment.

The Procfile's web command with three workers, a migrated SQLite file and the test Redis: one key
on one endpoint gets exactly its budget in total, whichever worker answers, and then 429s.

A sync worker serves one connection at a time, and the worker that has just answered usually
wins the next connection too, so plain requests in a row may all land on one worker. The test
therefore opens a connection before a burst and sends its request after it: the worker that
accepted that connection sat waiting for it meanwhile, so another worker answered the burst.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.conftest import free_port, process_env
from tests.ops.conftest import VOICE_SESSION

REPO = Path(__file__).resolve().parents[2]
WORKERS = 3
STARTUP_DEADLINE = 60  # seconds for gunicorn and its workers to boot on a loaded machine
LIVE_LIMIT = 5
# Each access-log line names the worker process that answered: `<pid> status path`.
ACCESS_LOG_FORMAT = "%(p)s %(s)s %(U)s"


@dataclass(frozen=True)
class Answer:
    status: int
    retry_after: str | None
    body: Any


@dataclass(frozen=True)
class Served:
    pid: str
    status: int
    path: str


def call(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    key: str | None = None,
    body: dict[str, Any] | None = None,
) -> Answer:
    """One request on its own connection (gunicorn's sync workers close it after answering)."""
    headers = {"Content-Type": "application/json"} | ({"Authorization": key} if key else {})
    connection.request(method, path, json.dumps(body) if body else None, headers)
    response = connection.getresponse()
    answer = Answer(response.status, response.getheader("Retry-After"), json.load(response))
    connection.close()
    return answer


@dataclass
class Gunicorn:
    port: int
    access_log: Path
    process: subprocess.Popen[bytes]

    def connect(self) -> http.client.HTTPConnection:
        """A TCP connection opened now: an idle worker accepts it and waits for its request."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        connection.connect()
        return connection

    def get(self, path: str, key: str) -> Answer:
        return call(self.connect(), "GET", path, key)

    def served(self, path: str) -> list[Served]:
        """The requests for `path` so far, in the order they were answered."""
        lines = self.access_log.read_text().splitlines() if self.access_log.exists() else []
        answered = (Served(pid, int(status), p) for pid, status, p in map(str.split, lines))
        return [s for s in answered if s.path == path]

    def wait_until_every_worker_answers(self) -> None:
        """Open one connection per worker, then ask /health on each: a booted worker takes one."""
        deadline = time.monotonic() + STARTUP_DEADLINE
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                with contextlib.ExitStack() as opened:  # closed even when a later one fails
                    connections = [
                        opened.enter_context(contextlib.closing(self.connect()))
                        for _ in range(WORKERS)
                    ]
                    for connection in connections:
                        call(connection, "GET", "/health")
            except (OSError, http.client.HTTPException):  # not listening yet
                time.sleep(0.1)
            if len({s.pid for s in self.served("/health")}) == WORKERS:
                return
        pytest.fail("gunicorn did not start all its workers")

    def stop(self) -> None:
        """A graceful shutdown. A worker logs a request after answering it: read the log after."""
        self.process.terminate()
        self.process.wait(timeout=STARTUP_DEADLINE)


@pytest.fixture
def gunicorn(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[Gunicorn]:
    """The Procfile's `web` process, configured through environment variables only."""
    port, access_log = free_port(), tmp_path / "access.log"
    env = process_env(database_url, redis_url, PAYDIAL_RATE_LIMIT_LIVE=f"{LIVE_LIMIT}/minute")
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(WORKERS),
        "--bind",
        f"127.0.0.1:{port}",
        "--access-logfile",
        str(access_log),
        "--access-logformat",
        ACCESS_LOG_FORMAT,
        "--no-control-socket",  # its default path is per user, shared by test runs side by side
        "api:create_app()",
    ]
    server = Gunicorn(port, access_log, subprocess.Popen(command, cwd=REPO, env=env))
    try:
        server.wait_until_every_worker_answers()
        yield server
    finally:
        server.stop()


@pytest.mark.redis
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_one_key_gets_one_budget_per_endpoint_whichever_worker_answers(
    gunicorn: Gunicorn, live_merchant: dict[str, str], make_key: Callable[..., str]
) -> None:
    live = live_merchant["live"]
    created = call(gunicorn.connect(), "POST", "/v1/sessions", live, VOICE_SESSION)
    assert created.status == 201, created.body
    path = f"/v1/sessions/{created.body['session_id']}"

    held = gunicorn.connect()
    answers = [gunicorn.get(path, live) for _ in range(11)]
    answers.append(call(held, "GET", path, live))

    assert [a.status for a in answers] == [200] * LIVE_LIMIT + [429] * 7
    refused = answers[LIVE_LIMIT:]
    assert all(a.body == {"detail": f"{LIVE_LIMIT} per 1 minute"} for a in refused)
    waits = [int(a.retry_after or "0") for a in refused]
    assert all(0 < wait <= 60 for wait in waits) and max(waits) - min(waits) <= 1
    # Another key on the same endpoint, and the same key on another endpoint, still get through.
    assert gunicorn.get(path, f"Bearer {make_key('acme', 'live')}").status == 200
    by_caller = urlencode({"caller": VOICE_SESSION["caller"]})
    assert gunicorn.get(f"/v1/sessions?{by_caller}", live).status == 200

    gunicorn.stop()
    served = gunicorn.served(path)
    assert [s.status for s in served] == [a.status for a in answers] + [200]  # + the other key
    # The held connection's worker answered none of the burst, yet refused at once: counting per
    # process, it would have let its own five through.
    assert served[11].pid not in {s.pid for s in served[:11]}
