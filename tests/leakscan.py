"""The whole-suite card-data leak scan (a pytest plugin loaded by tests/conftest.py).

Card data may reach the gateway and nothing else (PRODUCT.md, "Card data"). Over the entire test
run this plugin collects what Paydial leaves behind and searches it:

- logs: every record of every logger at DEBUG (SQL statements and parameters included), as the
  production handler would write it (through `payments.logs`' redaction filter);
- database rows: every row of every table, taken when a test's database is torn down (each test
  gets a fresh database, so the rows are read before they go);
- Redis: every key and value when a test's Redis database is flushed, RQ job payloads unpacked;
- webhook bodies: every request the tests' merchant receivers got.

It searches for every card number the suite uses (any digit literal in tests/, spaces or dashes
allowed between digits, with a card brand's prefix and length, that passes Luhn) and for security
codes and expiry dates next to the field names that carry them (`cvc=123`, `"exp_month": 12`,
Twilio's `Digits=...`). Findings fail the run at the end with where they were found; the terminal
summary prints what was scanned.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from gateways.cards import issuer_range, luhn_valid
from payments.logs import JsonFormatter, install_filters
from payments.store import Base

TESTS = Path(__file__).parent
_NUMBER_LITERAL = re.compile(r"\d(?:[ -]?\d){12,18}")
_SEPARATOR = re.compile(r"(?<=\d)[ -](?=\d)")
_FIELD_VALUE = re.compile(
    r"""(?ix)
    (?:(?<=%5B)|(?<![a-z]))(cvv2?|cvc2?|security[_ ]?code|card[_ ]?code|card[_ ]?number|digits
       |exp(?:iry|iration)?(?:[_ ]?(?:date|month|year))?)
    (?:\]|%5D)?["']?\s*(?:[:=]|%3D)\s*["']?(\d{2,4})(?!\d)
    """
)


def harvest_card_numbers(root: Path = TESTS) -> frozenset[str]:
    """Every Luhn-valid 13-19 digit number written anywhere in the test sources."""
    found = set()
    for path in root.rglob("*"):
        if path.suffix not in {".py", ".js", ".html", ".json"} or not path.is_file():
            continue
        for match in _NUMBER_LITERAL.finditer(path.read_text(encoding="utf-8", errors="replace")):
            digits = _SEPARATOR.sub("", match.group())
            if _is_card_number(digits):
                found.add(digits)
    return frozenset(found)


def _is_card_number(digits: str) -> bool:
    """Luhn-valid, with a brand's prefix and one of that brand's lengths."""
    issuer = issuer_range(digits)
    return issuer is not None and len(digits) in issuer[1].lengths and luhn_valid(digits)


@dataclass
class LeakScan:
    """Searches text for card numbers (anywhere) and for `codes` (as whole tokens only).

    `codes` are short values a test knows it entered (its expiry, its security code); the whole
    suite does not know them and relies on the field names around them instead.
    """

    card_numbers: frozenset[str]
    codes: frozenset[str] = frozenset()
    scanned: Counter[str] = field(default_factory=Counter)
    findings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        numbers = sorted(self.card_numbers, key=len, reverse=True)
        self._numbers = re.compile("|".join(map(re.escape, numbers)) or r"(?!)")
        codes = "|".join(map(re.escape, sorted(self.codes))) or r"(?!)"
        self._codes = re.compile(rf"(?<![0-9A-Za-z])(?:{codes})(?![0-9A-Za-z])")

    def leaks(self, text: str) -> list[str]:
        """What in `text` is card data: numbers in full, codes and dates with their field."""
        found = [m.group() for m in self._numbers.finditer(_SEPARATOR.sub("", text))]
        found += [m.group() for m in self._codes.finditer(text)]
        found += [m.group() for m in _FIELD_VALUE.finditer(text)]
        return found

    def check(self, kind: str, where: str, text: str) -> None:
        self.scanned[kind] += 1
        for leak in self.leaks(text):
            self.findings.append(f"{kind} ({where}): {leak!r}")

    def scan_database(self, url: str, where: str) -> None:
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                for table in Base.metadata.sorted_tables:
                    for row in connection.execute(select(table)):
                        self.check("database row", f"{where}, {table.name}", repr(tuple(row)))
        finally:
            engine.dispose()

    def scan_redis(self, client: Any, where: str) -> None:
        for key in client.scan_iter(count=500):
            value = _redis_value(client, key)
            if key.startswith(b"rq:job:") and isinstance(value, dict) and value.get(b"data"):
                payload = zlib.decompress(value[b"data"])  # RQ packs the pickled call this way
                self.check("job payload", where, payload.decode("latin-1"))
            self.check("redis key", where, key.decode("latin-1") + " " + repr(value))

    def report(self) -> str:
        counts = "; ".join(f"{kind}: {n}" for kind, n in sorted(self.scanned.items()))
        found = f"{len(self.findings)} findings" if self.findings else "nothing found"
        return f"card-data leak scan ({len(self.card_numbers)} card numbers) {counts}: {found}"


def _redis_value(client: Any, key: bytes) -> object:
    """The value as stored (not DUMP, whose format compresses longer strings)."""
    kind = client.type(key).decode()
    if kind == "string":
        return client.get(key)
    if kind == "hash":
        return client.hgetall(key)
    if kind == "list":
        return client.lrange(key, 0, -1)
    if kind == "set":
        return client.smembers(key)
    if kind == "zset":
        return client.zrange(key, 0, -1, withscores=True)
    if kind == "stream":
        return client.xrange(key)
    return None  # gone between SCAN and TYPE


class _ScanHandler(logging.Handler):
    """Formats each record as production would (after redaction) and checks it."""

    def __init__(self, scan: LeakScan) -> None:
        super().__init__(logging.DEBUG)
        self.scan = scan
        install_filters(self)
        self.setFormatter(JsonFormatter())
        self.where = "collection"

    def emit(self, record: logging.LogRecord) -> None:
        self.scan.check("log record", f"{self.where}, logger {record.name}", self.format(record))


_SCAN = pytest.StashKey[LeakScan]()
_HANDLER = pytest.StashKey[_ScanHandler]()


@pytest.fixture(scope="session")
def leak_scan(pytestconfig: pytest.Config) -> LeakScan:
    """The run's scan, for fixtures that hand it what they are about to throw away."""
    return pytestconfig.stash[_SCAN]


def pytest_configure(config: pytest.Config) -> None:
    scan = config.stash[_SCAN] = LeakScan(harvest_card_numbers())
    handler = config.stash[_HANDLER] = _ScanHandler(scan)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)  # statements and parameters


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    item.config.stash[_HANDLER].where = item.nodeid
    return (yield)


def pytest_sessionfinish(session: pytest.Session) -> None:
    logging.getLogger().removeHandler(session.config.stash[_HANDLER])
    if session.config.stash[_SCAN].findings and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    scan = config.stash[_SCAN]
    terminalreporter.write_line(scan.report())
    if scan.findings:
        terminalreporter.write_sep("=", "CARD DATA FOUND", red=True)
        for finding in scan.findings[:200]:
            terminalreporter.write_line(finding, red=True)
