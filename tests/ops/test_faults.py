"""PostgreSQL going away: the API answers 503 JSON, and every session committed before survives."""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

from ivr.wiring import build_services
from payments.accounts import create_project, issue_key
from payments.model import Environment
from payments.store import Database
from tests.conftest import make_settings
from tests.ops.conftest import VOICE_SESSION, app_for

pytestmark = pytest.mark.postgres


class Outage:
    """A TCP hop in front of PostgreSQL that the test can cut (refusing, dropping connections)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        if self._listener is None:
            return
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self._listener.close()
        self._listener = None
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass


@pytest.fixture
def outage(postgres_url: str) -> Iterator[tuple[Outage, str]]:
    url = make_url(postgres_url)
    hop = Outage((url.host or "127.0.0.1", url.port or 5432))
    hop.up()
    yield hop, url.set(port=hop.port).render_as_string(hide_password=False)
    hop.down()


def test_postgres_down_gives_503_json_and_loses_no_committed_session(
    outage: tuple[Outage, str],
) -> None:
    hop, url = outage
    db = Database(url)
    services = build_services(make_settings(url), db=db)
    slug = f"fault-{uuid.uuid4().hex[:8]}"
    with db.transaction() as tx:
        create_project(tx, slug, now=services.clock())
        key = issue_key(tx, slug, Environment.TEST, now=services.clock()).plaintext
    client = app_for(services).test_client()
    auth = {"Authorization": f"Bearer {key}"}
    body = VOICE_SESSION | {"project": slug}
    created = client.post("/v1/sessions", json=body, headers=auth)
    assert created.status_code == 201
    session_id = created.get_json()["session_id"]

    hop.down()
    for response in (
        client.post("/v1/sessions", json=body, headers=auth | {"Idempotency-Key": "k1"}),
        client.get(f"/v1/sessions/{session_id}", headers=auth),
        client.post(f"/v1/sessions/{session_id}/cancel", headers=auth),
    ):
        assert response.status_code == 503
        assert response.is_json and set(response.get_json()) == {"detail"}
        assert int(response.headers["Retry-After"]) > 0

    hop.up()
    try:
        fetched = client.get(f"/v1/sessions/{session_id}", headers=auth)
        assert fetched.status_code == 200 and fetched.get_json()["status"] == "pending"
        retried = client.post("/v1/sessions", json=body, headers=auth | {"Idempotency-Key": "k1"})
        assert retried.status_code == 201  # the key used during the outage is not stuck
    finally:
        db.dispose()


def test_a_database_at_a_closed_port_gives_503_json() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port}/test"
    services = build_services(make_settings(url), db=Database(url))
    client = app_for(services).test_client()
    key = "mvn_test_" + "a" * 32
    response = client.get("/v1/sessions/any", headers={"Authorization": f"Bearer {key}"})
    services.db.dispose()
    assert response.status_code == 503
    assert response.get_json() == {"detail": "Service temporarily unavailable; try again shortly"}
    assert client.get("/health").status_code == 200
