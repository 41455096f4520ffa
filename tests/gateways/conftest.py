"""Gateway test fixtures: an address that refuses connections (localstripe: tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.conftest import free_port


@pytest.fixture
def refused_url() -> str:
    """An address where nothing listens: the connection is refused before anything is sent."""
    return f"http://127.0.0.1:{free_port()}"
