"""GET /v1/sessions/{id}/events: a session's status changes as Server-Sent Events.

Each committed row of `session_events` is one event (`id:` its row id, `event: status`,
`data:` the change as JSON); the stream ends after the terminal status. `Last-Event-ID` (the
header browsers' EventSource sends on reconnect, or `?last_event_id=`) resumes after that event,
so a dropped connection misses nothing.

A listener must not hold a web process: the Procfile runs gunicorn's `gthread` workers, so a
stream holds one thread and a database connection only for each short poll
(`PAYDIAL_EVENTS_POLL`, 0.5 s). A response lasts at most `PAYDIAL_EVENTS_STREAM_SECONDS` (300)
and then ends with the client told to reconnect (`retry:`), so threads come back even from
listeners that never leave; a comment line every 15 s finds the ones that left.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from flask import Blueprint, Response, request
from sqlalchemy import select

from api.auth import current_caller, require_api_key
from api.errors import RequestValidationError
from api.extension import current_services
from payments.model import Status
from payments.services import Services
from payments.sessions import load_session
from payments.store import SessionEvent

bp = Blueprint("events", __name__, url_prefix="/v1")

HEARTBEAT_SECONDS = 15.0
RECONNECT_MS = 1000


def _last_event_id() -> int:
    raw = request.headers.get("Last-Event-ID") or request.args.get("last_event_id") or "0"
    if not (raw.isascii() and raw.isdigit()):
        raise RequestValidationError(
            [
                {
                    "loc": ["header", "Last-Event-ID"],
                    "msg": "Must be an event id",
                    "type": "int_parsing",
                }
            ]
        )
    return int(raw)


def _frame(event: SessionEvent) -> str:
    data = {
        "session_id": event.session_id,
        "status": event.to_status,
        "previous_status": event.from_status,
        "is_terminal": Status(event.to_status).is_terminal,
        "cause": event.cause,
        "at": event.at.isoformat(),
    }
    return f"id: {event.id}\nevent: status\ndata: {json.dumps(data)}\n\n"


def stream(services: Services, session_id: str, after: int) -> Iterator[str]:
    """Frames for the session's events after `after`, until terminal or the time is up."""
    settings = services.settings
    started = last_sent = time.monotonic()
    yield f"retry: {RECONNECT_MS}\n\n"
    while True:
        with services.db.transaction() as tx:
            session = load_session(tx, session_id, now=services.clock())
            events = tx.scalars(
                select(SessionEvent)
                .where(SessionEvent.session_id == session_id, SessionEvent.id > after)
                .order_by(SessionEvent.id)
            ).all()
            frames = [_frame(event) for event in events]
            finished = Status(session.status).is_terminal
        if events:
            after = events[-1].id
        for frame in frames:
            yield frame
            last_sent = time.monotonic()
        if finished:
            return
        now = time.monotonic()
        if now - started >= settings.events_stream_seconds:
            return
        if now - last_sent >= HEARTBEAT_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = now
        time.sleep(settings.events_poll_seconds)


@bp.get("/sessions/<session_id>/events")
@require_api_key
def session_events(session_id: str) -> Response:
    services = current_services()
    caller = current_caller()
    after = _last_event_id()
    with services.db.transaction() as tx:  # 404 before the stream starts, like GET /sessions/{id}
        load_session(
            tx,
            session_id,
            now=services.clock(),
            account_id=caller.account_id,
            environment=caller.environment,
        )
    return Response(
        stream(services, session_id, after),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
