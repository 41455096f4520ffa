"""The leak scan itself finds card data where it hides, and does not cry wolf at ids and amounts."""

from __future__ import annotations

import pickle
import zlib
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

from paydial.migrate import upgrade
from tests.leakscan import LeakScan, harvest_card_numbers

VISA = "4242424242424242"


@pytest.fixture
def scan() -> LeakScan:
    return LeakScan(frozenset({VISA, "378282246310005"}))


def test_the_suites_card_numbers_are_harvested_from_the_test_sources(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text(
        'CARD = "4242 4242 4242 4242"\nAMEX = "378282246310005"\n'
        'NOT_LUHN = "4242424242424241"\nPHONE = "+14155550100"\n'
        'ZEROS = "0000000000000"\nVISA_15 = "424242424242424"\n'  # Luhn-valid, but no card
    )
    assert harvest_card_numbers(tmp_path) == {VISA, "378282246310005"}
    assert {VISA, "378282246310005", "4000000000000002"} <= harvest_card_numbers()


@pytest.mark.parametrize(
    "leaky",
    [
        f"charge card {VISA} ok",
        "card 4242 4242 4242 4242 ok",
        "card 4242-4242-4242-4242 ok",
        "card[cvc]=123&card[exp_month]=12",
        "card%5Bcvc%5D=987",
        '{"security_code": "6543"}',
        "'exp_year': 2030",
        "gather Digits=1230",
    ],
)
def test_card_data_in_any_shape_is_found(scan: LeakScan, leaky: str) -> None:
    assert scan.leaks(leaky) != []


@pytest.mark.parametrize(
    "clean",
    [
        "card ending 4242, visa, [redacted card number]",
        "session 1f0c2a8e-4242-4242-8242-424242424242 amount 25.00",
        "attempts=3 expires_at=2026-11-21T12:00:00 caller +14155550100",
        "cvc_length: 3-4",
    ],
)
def test_last_four_ids_and_dates_are_not_card_data(scan: LeakScan, clean: str) -> None:
    assert scan.leaks(clean) == []


def test_a_card_number_in_any_table_row_is_reported_with_its_table(
    scan: LeakScan, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'leaky.db'}"
    upgrade(url)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO velocity_events (subject, at) VALUES (:s, '2026-11-21')"),
            {"s": f"card:{VISA}"},
        )
    engine.dispose()

    scan.scan_database(url, "planted")

    assert scan.findings == [f"database row (planted, velocity_events): '{VISA}'"]


def test_card_data_in_redis_values_and_packed_job_payloads_is_found(
    scan: LeakScan, redis_url: str
) -> None:
    redis_client = redis.Redis.from_url(redis_url)
    redis_client.set("plain", f"number={VISA}")
    payload = zlib.compress(pickle.dumps(("pay", ("378282246310005",), {})))
    redis_client.hset("rq:job:planted", mapping={"data": payload, "status": "queued"})
    redis_client.set("clean", "nothing here")

    scan.scan_redis(redis_client, "planted")

    assert sorted(scan.findings) == [
        "job payload (planted): '378282246310005'",
        f"redis key (planted): '{VISA}'",
    ]
    assert scan.scanned["redis key"] == 3
    redis_client.flushdb()  # planted: not for the whole-suite scan to find
    redis_client.close()
