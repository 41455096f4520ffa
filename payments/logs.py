"""Structured logs with request and session ids, and a filter that masks card numbers in any line.

`configure` installs the filters on every handler of the root logger, so a record from any logger
that propagates to the root (ours, a library's, an SDK's) is masked before it is written: any run
of 12 to 19 digits that passes the Luhn check, with spaces or dashes allowed between the digits,
as typed or as a URL carries them (`+`, `%20`, `%2D`), so a query string in an access log line is
masked like any other text.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

from gateways.cards import luhn_valid

MASK = "[redacted card number]"
_SEPARATOR = r"(?:[ +-]|%20|%2[dD])"
_DIGIT_RUN = re.compile(rf"\d(?:{_SEPARATOR}?\d){{11,}}")
_DIGIT_OR_SEPARATOR = re.compile(rf"{_SEPARATOR}|\d")
# A UUID (a session's, a project's id) may hold 12 digits across its dashes that pass Luhn: one
# with a hex letter in it is an id, never a card number, and is left whole, also where a dash
# joins it to a name (a job's id, `pay-<session id>-1`).
_HEX = "[0-9a-fA-F]"
_UUID_OR_DIGIT_RUN = re.compile(
    rf"(?<![0-9a-fA-F])(?P<uuid>{_HEX}{{8}}(?:-{_HEX}{{4}}){{3}}-{_HEX}{{12}})(?![0-9a-fA-F])"
    rf"|{_DIGIT_RUN.pattern}"
)

request_id_var: ContextVar[str | None] = ContextVar("paydial_request_id", default=None)
session_id_var: ContextVar[str | None] = ContextVar("paydial_session_id", default=None)


def redact(text: str) -> str:
    """Mask every run of 12-19 digits (separators allowed) that passes Luhn.

    A longer run may be a card number followed by its expiry, so every 12-19 digit stretch of it
    is checked instead.
    """
    return _UUID_OR_DIGIT_RUN.sub(_mask_unless_id, text)


def _mask_unless_id(match: re.Match[str]) -> str:
    uuid = match.group("uuid")
    if uuid is None:
        return _mask_run(match)
    return uuid if not uuid.replace("-", "").isdigit() else _DIGIT_RUN.sub(_mask_run, uuid)


def _mask_run(match: re.Match[str]) -> str:
    run = match.group()
    # the digits of the run, not those of a `%20` between them
    positions = [m.start() for m in _DIGIT_OR_SEPARATOR.finditer(run) if m.group().isdigit()]
    digits = "".join(run[i] for i in positions)
    masked = [False] * len(digits)
    if len(digits) <= 19:
        masked = [luhn_valid(digits)] * len(digits)
    else:
        for start in range(len(digits)):
            for length in range(12, min(19, len(digits) - start) + 1):
                if luhn_valid(digits[start : start + length]):
                    masked[start : start + length] = [True] * length
    if not any(masked):
        return run
    first, last = masked.index(True), len(masked) - 1 - masked[::-1].index(True)
    return run[: positions[first]] + MASK + run[positions[last] + 1 :]


class RedactCardNumbers(logging.Filter):
    """Rewrites the record in place, so every handler after this one sees the masked text too."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that don't fit the format: keep the text
            message = str(record.msg)
            record.msg, record.args = message, None
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class AddContext(logging.Filter):
    """Puts the current request id and session id on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.session_id = session_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            "session_id": getattr(record, "session_id", None),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry)


TEXT_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [req=%(request_id)s session=%(session_id)s] %(message)s"
)


def configure(*, json_logs: bool, level: str = "INFO") -> None:
    """Idempotent: give the root a handler if it has none, and every root handler the filters."""
    root = logging.getLogger()
    if not root.handlers:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(JsonFormatter() if json_logs else logging.Formatter(TEXT_FORMAT))
        root.addHandler(stream)
        root.setLevel(level.upper())
    for handler in root.handlers:
        install_filters(handler)


def install_filters(handler: logging.Handler) -> None:
    if not any(isinstance(f, AddContext) for f in handler.filters):
        handler.addFilter(AddContext())
    if not any(isinstance(f, RedactCardNumbers) for f in handler.filters):
        handler.addFilter(RedactCardNumbers())


@contextmanager
def bound(*, session_id: str | None) -> Iterator[None]:
    """Tag log lines with a session id for the duration of the block (jobs, sweeps, calls)."""
    token = session_id_var.set(session_id)
    try:
        yield
    finally:
        session_id_var.reset(token)
