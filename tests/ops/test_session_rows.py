"""A new session's rows are written by plain INSERTs (`payments.sessions.create_session`); the
object it hands back must still behave as the ORM's own in the same transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select

from payments.model import Channel, Environment, Gateway, PaymentMode, Status
from payments.services import Services
from payments.sessions import NewSession, create_session, transition
from payments.store import PaymentSession, Project, SessionEvent


def test_a_session_changed_in_the_transaction_that_created_it_keeps_both(
    services: Services, make_project: Callable[..., str]
) -> None:
    make_project("acme")
    now = services.clock()
    with services.db.transaction() as tx:
        account_id = tx.scalars(select(Project.account_id)).one()
        session = create_session(
            tx,
            account_id=account_id,
            environment=Environment.TEST,
            now=now,
            new=NewSession(
                project="acme",
                amount_cents=1250,
                mode=PaymentMode.CHARGE,
                gateway=Gateway.STRIPE,
                channel=Channel.VOICE,
                ttl=timedelta(minutes=30),
                caller="+14155550100",
            ),
        )
        # What the INSERT did not name reads as the database has it, without a write.
        assert (session.call_sid, session.refunded_cents, session.refunds) == (None, 0, [])
        assert tx.get(PaymentSession, session.id) is session
        later = now + timedelta(seconds=5)
        transition(tx, session, Status.COLLECTING, cause="call bound", now=later)
        session_id = session.id

    with services.db.transaction() as tx:
        stored = tx.get_one(PaymentSession, session_id)
        assert (stored.status, stored.amount_cents, stored.caller) == (
            Status.COLLECTING.value,
            1250,
            "+14155550100",
        )
        assert stored.access_code is not None and len(stored.access_code) == 6
        assert stored.updated_at > stored.created_at
        events = tx.execute(
            select(SessionEvent.from_status, SessionEvent.to_status, SessionEvent.cause)
            .where(SessionEvent.session_id == session_id)
            .order_by(SessionEvent.id)
        ).all()
        assert [tuple(e) for e in events] == [
            (None, "pending", "created"),
            ("pending", "collecting", "call bound"),
        ]
