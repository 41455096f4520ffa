"""Gateway test fixtures: localstripe and an address that refuses connections."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from tests.gateways.gateway_helpers import free_port


@pytest.fixture
def refused_url() -> str:
    """An address where nothing listens: the connection is refused before anything is sent."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="session")
def localstripe_url() -> Iterator[str]:
    """A real localstripe process: the Stripe SDK talks to it over HTTP like to api.stripe.com."""
    executable = shutil.which("localstripe")
    if executable is None:
        pytest.skip("localstripe is not installed (pip install -e '.[test]')")
    port = free_port()
    process = subprocess.Popen(
        [executable, "--port", str(port), "--from-scratch"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("localstripe did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=5)
