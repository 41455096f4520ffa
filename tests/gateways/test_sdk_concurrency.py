"""The SDKs guarded by a module lock (Authorize.net, Shift4) still wait on the network together.

Each local server answers only once every caller's request has arrived (a barrier), so calls
that queue behind one another's network wait never finish: the first waits for the others.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from gateways.base import PaymentGateway
from tests.gateways.gateway_helpers import make_request
from tests.gateways.test_authorizenet_gateway import PATH, anet, make_anet, transaction_answer
from tests.gateways.test_shift4_gateway import CHARGE, make_shift4, s4

CALLERS = 6
TOGETHER = 30.0  # seconds the server waits for every caller's request, on a loaded machine
TIMEOUT = 60.0  # the adapters' timeout outlasts that wait


@pytest.fixture
def threaded_server() -> Iterator[HTTPServer]:
    server = HTTPServer(threaded=True)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


GATEWAYS: dict[str, tuple[str, Callable[[], Response], Callable[[str], PaymentGateway]]] = {
    "authorizenet": (
        PATH,
        lambda: anet(transaction_answer()),
        lambda url: make_anet(url.rstrip("/"), timeout=TIMEOUT),
    ),
    "shift4": ("/charges", lambda: s4(CHARGE), lambda url: make_shift4(url, timeout=TIMEOUT)),
}


@pytest.mark.parametrize("name", sorted(GATEWAYS))
def test_concurrent_charges_are_at_the_gateway_at_the_same_time(
    threaded_server: HTTPServer, name: str
) -> None:
    path, answer, build = GATEWAYS[name]
    everyone = threading.Barrier(CALLERS, timeout=TOGETHER)

    def together(request: Request) -> Response:
        everyone.wait()  # raises (a 500) unless all callers' requests are in flight at once
        return answer()

    threaded_server.expect_request(path).respond_with_handler(together)
    gateway = build(threaded_server.url_for(""))

    with ThreadPoolExecutor(max_workers=CALLERS) as pool:
        results = list(pool.map(lambda _: gateway.charge(make_request()), range(CALLERS)))

    assert [result.outcome for result in results] == ["captured"] * CALLERS
    assert len(threaded_server.log) == CALLERS
