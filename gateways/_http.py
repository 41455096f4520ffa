"""What the four requests-based SDKs share: transport-failure classification and a timeout shim."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from urllib3.exceptions import NewConnectionError

from gateways.base import (
    GatewayConfigurationError,
    GatewayError,
    GatewayOutcomeUnknown,
    GatewayUnavailable,
)

_LONG_DIGIT_RUN = re.compile(r"\d{12,19}")


def quiet_debug_log(logger_name: str) -> None:
    """Raise an SDK logger above DEBUG: at DEBUG it writes request bodies, card numbers included."""
    logger = logging.getLogger(logger_name)
    if logger.getEffectiveLevel() < logging.INFO:
        logger.setLevel(logging.INFO)


def scrub(text: object) -> str:
    """Gateway-supplied text with anything shaped like a card number removed, fit for a message."""
    return _LONG_DIGIT_RUN.sub("[redacted]", str(text or ""))[:300]


def _never_connected(exc: BaseException) -> bool:
    """True when the TCP connection was never made, so the gateway cannot have seen the request."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if id(item) in seen or not isinstance(item, BaseException):
            continue
        seen.add(id(item))
        if isinstance(item, NewConnectionError | requests.ConnectTimeout):
            return True
        todo.extend([*item.args, getattr(item, "reason", None), item.__cause__, item.__context__])
    return False


def transport_error(exc: BaseException, gateway: str) -> GatewayError:
    """A requests failure: unavailable only when nothing was sent, else the outcome is unknown."""
    if _never_connected(exc):
        return GatewayUnavailable(f"{gateway} could not be reached")
    if isinstance(exc, requests.Timeout):
        return GatewayOutcomeUnknown(f"{gateway} did not answer within the timeout")
    return GatewayOutcomeUnknown(f"{gateway} connection failed after the request was sent")


def status_error(status: int, gateway: str, processor_code: str | None = None) -> GatewayError:
    """An HTTP failure status: 502/503/429 never reached processing; other 5xx may have."""
    if status in (401, 403):
        return GatewayConfigurationError(
            f"{gateway} rejected the credentials (HTTP {status})", processor_code=processor_code
        )
    if status in (429, 502, 503):
        return GatewayUnavailable(
            f"{gateway} is unavailable (HTTP {status})", processor_code=processor_code
        )
    return GatewayOutcomeUnknown(
        f"{gateway} answered HTTP {status}; the payment may have gone through",
        processor_code=processor_code,
    )


class TimeoutRequests:
    """Stands in for an SDK's module-level `requests`: same calls, plus the adapter's timeout.

    It also remembers the last status or exception per thread, because the Authorize.net SDK
    swallows both and only hands back None.

    An SDK whose globals must be guarded by a lock (Authorize.net, Shift4) has read them into the
    request by the time it sends: `call(..., unlocked=lock)` lets go of that lock while the request
    is on the wire and takes it back before the SDK reads the answer, so calls overlap their
    network waits instead of queueing behind one another.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    @contextmanager
    def call(self, timeout: float, *, unlocked: threading.Lock | None = None) -> Iterator[None]:
        """Scope one SDK call: set this thread's timeout and clear what the last call saw."""
        self._local.timeout = timeout
        self._local.unlocked = unlocked
        self._local.status = None
        self._local.error = None
        try:
            yield
        finally:
            self._local.timeout = None
            self._local.unlocked = None

    @property
    def last_status(self) -> int | None:
        return getattr(self._local, "status", None)

    @property
    def last_error(self) -> BaseException | None:
        return getattr(self._local, "error", None)

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        timeout = getattr(self._local, "timeout", None)
        if timeout is None:
            raise RuntimeError("gateway SDK used outside TimeoutRequests.call()")
        lock: threading.Lock | None = getattr(self._local, "unlocked", None)
        if lock is not None:
            # Another thread may set the globals while this request waits: one request per call.
            if self._local.status is not None or self._local.error is not None:
                raise RuntimeError("a lock-guarded SDK call may send only one request")
            lock.release()
        try:
            response = requests.request(method, url, timeout=timeout, **kwargs)
        except requests.RequestException as exc:
            self._local.error = exc
            raise
        finally:
            if lock is not None:
                lock.acquire()
        self._local.status = response.status_code
        return response

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", url, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(requests, name)
