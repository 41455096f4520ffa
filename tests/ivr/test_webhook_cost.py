"""What one Twilio webhook costs the stores once a call is bound (issue 13).

A gather reads and writes the call's state in Redis and runs no SQL: the session's context was
sealed with the state when the call bound. A hold poll runs no SQL either until the payment's
job has answered (a note in call state), then one indexed read. The hang-up of a call whose
session ended runs none: the commit that ended it left a note in call state. Statements are
counted on the real engine (`before_cursor_execute`), Redis commands on the real client, and
only for the request's own work: the payment job runs between webhooks, as in a worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import event

from ivr.callstate import CallServices, CallStates, RedisCallStateStore
from ivr.charge import run_payment_job
from ivr.flow import MAX_HOLD_POLLS
from ivr.phone import HttpReply, ScriptedKeypad, Transport
from ivr.wiring import build_services
from payments.services import PaymentJob, Services
from tests.conftest import TEST_SECRET_KEY, Clock, make_settings
from tests.ivr.conftest import APPROVED, CVV, DECLINED, EXPIRY
from tests.ivr.twilio_client import flask_transport, phone_over

pytestmark = pytest.mark.redis


class CountingRedis(redis.Redis):
    """The redis-py client, noting the name of every command it sends."""

    commands: list[str]

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append(str(args[0]))
        return super().execute_command(*args, **options)


class BetweenWebhooks:
    """Payment jobs wait here and run after the webhook that submitted them, not inside it."""

    def __init__(self) -> None:
        self.waiting: list[PaymentJob] = []

    def submit(self, job: PaymentJob) -> None:
        self.waiting.append(job)

    def deliver(self, event_id: str) -> None:
        """Merchant webhooks are not what these tests count."""

    def operate(self, operation_id: int) -> None:
        raise AssertionError("no refunds here")

    def run(self, services: CallServices) -> None:
        while self.waiting:
            run_payment_job(services, self.waiting.pop(0))


@dataclass
class Webhook:
    path: str
    statements: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


@pytest.fixture
def jobs() -> BetweenWebhooks:
    return BetweenWebhooks()


@pytest.fixture
def counting_redis(redis_url: str) -> Iterator[CountingRedis]:
    client = CountingRedis.from_url(redis_url)
    client.commands = []
    yield client
    client.close()


@pytest.fixture
def services(
    database_url: str, clock: Clock, counting_redis: CountingRedis, jobs: BetweenWebhooks
) -> Iterator[CallServices]:
    """Call state in Redis (the scaled-out setup) through a client that counts commands."""
    settings = make_settings(database_url)
    services = build_services(
        settings,
        clock=clock,
        callstates=CallStates(
            RedisCallStateStore(counting_redis), TEST_SECRET_KEY, waiters=settings.hold_waiters
        ),
        runner=lambda _: jobs,
    )
    yield services
    services.db.dispose()


@pytest.fixture
def webhooks(
    services: Services, client: FlaskClient, jobs: BetweenWebhooks, counting_redis: CountingRedis
) -> Iterator[tuple[Transport, list[Webhook]]]:
    """A transport to the app that records each webhook's SQL and Redis commands; a payment job
    a webhook submitted runs after the first hold poll, so that one finds the attempt running."""
    sent: list[Webhook] = []
    statements: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.startswith("BEGIN"):  # SQLite's own (payments.store), not a query
            statements.append(statement)

    event.listen(services.db.engine, "before_cursor_execute", note)
    send = flask_transport(client)

    def counted(path: str, form: Mapping[str, str], headers: Mapping[str, str]) -> HttpReply:
        statements.clear()
        counting_redis.commands.clear()
        reply = send(path, form, headers)
        sent.append(Webhook(path, list(statements), list(counting_redis.commands)))
        if path.startswith("/twilio/result"):
            jobs.run(services)
        return reply

    yield counted, sent
    event.remove(services.db.engine, "before_cursor_execute", note)


def test_a_bound_call_keys_its_card_and_holds_without_sql_until_its_job_answers(
    new_session: Callable[..., dict[str, Any]],
    webhooks: tuple[Transport, list[Webhook]],
) -> None:
    transport, sent = webhooks
    created = new_session()
    keys = ScriptedKeypad([APPROVED + "#", EXPIRY + "#", CVV + "#", "1"])

    result = phone_over(transport, to=created["sip_uri"]).call(keys)

    assert "Your payment was approved." in result.heard
    paths = [w.path.split("?")[0] for w in sent]
    assert paths == [
        "/twilio/voice",
        *["/twilio/gather"] * 4,
        "/twilio/result",
        "/twilio/result",
        "/twilio/status",
    ]
    gathers, (waiting, answered), status = sent[1:5], sent[5:7], sent[7]
    assert [len(w.statements) for w in gathers] == [0, 0, 0, 0]
    # card number, expiry, security code: read the state, write it back; the confirm also
    # claims the attempt and parks the card for the job
    assert [w.commands for w in gathers[:3]] == [["MGET", "SET"]] * 3
    # the hold poll while the job runs: read the state, wait for news, write it back
    assert waiting.statements == [] and waiting.commands == ["MGET", "BLPOP", "SET"]
    # the hold poll's one read of the session and the attempt; the session has ended, so that
    # read also says where the caller goes: nothing more is read or recorded
    [read] = answered.statements
    assert read.startswith("SELECT sessions.status")
    assert "JOIN payment_attempts" in read
    # the hang-up: the job's commit noted the session's end in call state, so nothing is closed
    assert status.statements == [] and status.commands == ["MGET", "DEL"]


def test_a_second_card_holds_without_sql_though_the_first_attempt_was_answered(
    new_session: Callable[..., dict[str, Any]],
    webhooks: tuple[Transport, list[Webhook]],
) -> None:
    transport, sent = webhooks
    created = new_session()
    keys = ScriptedKeypad(
        [
            DECLINED + "#",
            EXPIRY + "#",
            CVV + "#",
            "1",
            "1",
            APPROVED + "#",
            EXPIRY + "#",
            CVV + "#",
            "1",
        ]
    )

    result = phone_over(transport, to=created["sip_uri"]).call(keys)

    assert "The card was declined by the bank." in result.heard
    assert "Your payment was approved." in result.heard
    polls = [w for w in sent if w.path.startswith("/twilio/result")]
    assert len(polls) == 4  # each attempt: one while its job runs, one once it answered
    assert [len(w.statements) for w in (polls[0], polls[2])] == [0, 0]
    assert all(w.statements for w in (polls[1], polls[3]))


def test_a_lost_answer_note_is_made_up_for_by_a_last_read_at_the_hold_limit(
    new_session: Callable[..., dict[str, Any]],
    webhooks: tuple[Transport, list[Webhook]],
    jobs: BetweenWebhooks,
    services: CallServices,
    counting_redis: CountingRedis,
) -> None:
    transport, sent = webhooks
    created = new_session()  # a decline leaves it open: no note says the session ended
    keys = ScriptedKeypad([DECLINED + "#", EXPIRY + "#", CVV + "#", "1", "2"])
    note_answered = services.callstates.note_answered

    def lost(call_sid: str, attempt: int) -> None:  # written, then lost with a Redis failover
        note_answered(call_sid, attempt)
        counting_redis.delete(f"paydial:call:answered:{call_sid}")

    services.callstates.note_answered = lost  # type: ignore[method-assign]

    result = phone_over(transport, to=created["sip_uri"]).call(keys)

    assert "The card was declined by the bank." in result.heard  # not "the merchant will be told"
    polls = [w for w in sent if w.path.startswith("/twilio/result")]
    assert len(polls) == MAX_HOLD_POLLS
    assert [len(w.statements) for w in polls[:-1]] == [0] * (MAX_HOLD_POLLS - 1)
    assert polls[-1].statements


def test_binding_the_transfer_back_and_the_hang_up_read_each_row_once(
    new_session: Callable[..., dict[str, Any]],
    webhooks: tuple[Transport, list[Webhook]],
) -> None:
    transport, sent = webhooks
    created = new_session(callback="sip:agent@agents.example.com")
    keys = ScriptedKeypad([APPROVED + "#", EXPIRY + "#", CVV + "#", "1"])

    result = phone_over(transport, to=created["sip_uri"]).call(keys)

    assert result.dialed
    voice, dial, status = sent[0], sent[-2], sent[-1]
    assert [w.path.split("?")[0] for w in (voice, dial, status)] == [
        "/twilio/voice",
        "/twilio/dial",
        "/twilio/status",
    ]
    for webhook in sent:
        reads = [s for s in webhook.statements if s.startswith("SELECT")]
        assert len(reads) == len(set(reads)), webhook
    # the session (locked) with its project, binding's update and event, the caller's failures
    assert len(voice.statements) == 4
    # the transfer's status, one UPDATE of the session by its CallSid; the hang-up runs none: the
    # job's commit noted in call state that the session ended
    assert [s.split()[0] for s in dial.statements] == ["UPDATE"]
    assert status.statements == []


def test_a_lost_session_ended_note_has_the_hang_up_read_the_session_and_leave_it_as_it_ended(
    new_session: Callable[..., dict[str, Any]],
    webhooks: tuple[Transport, list[Webhook]],
    services: CallServices,
    counting_redis: CountingRedis,
    client: FlaskClient,
    merchant: dict[str, str],
) -> None:
    transport, sent = webhooks
    created = new_session(callback="sip:agent@agents.example.com")
    keys = ScriptedKeypad([APPROVED + "#", EXPIRY + "#", CVV + "#", "1"])
    note_session_ended = services.callstates.note_session_ended

    def lost(call_sid: str) -> None:  # written, then lost with a Redis failover
        note_session_ended(call_sid)
        counting_redis.delete(f"paydial:call:ended:{call_sid}")

    services.callstates.note_session_ended = lost  # type: ignore[method-assign]

    result = phone_over(transport, to=created["sip_uri"]).call(keys)

    assert result.dialed
    status = sent[-1]
    assert status.path.startswith("/twilio/status")
    [read] = status.statements
    assert read.startswith("SELECT sessions.")
    after = client.get(
        f"/v1/sessions/{created['session_id']}", headers={"Authorization": merchant["test"]}
    )
    assert after.json["status"] == "payment-success"
