"""`Idempotency-Key` on POSTs: same key and request replay the first answer; another is a 409.

Requests are compared by meaning, as Stripe does: the parsed body (key order, whitespace, `150`
vs `"150.00"` and left-out defaults make no difference), not its raw bytes.

A placeholder row is committed before the view runs, so two concurrent requests with one key
cannot both act: the second sees the placeholder and gets a 409 until the first has answered.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import wraps
from typing import ParamSpec

from flask import Response, make_response, request
from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as Tx
from werkzeug.exceptions import Conflict

from api.auth import current_caller
from api.errors import RequestValidationError
from api.extension import current_services
from api.validation import parse_body
from payments.store import IdempotencyRecord

P = ParamSpec("P")
RETENTION = timedelta(hours=24)
MAX_KEY_LENGTH = 255
# Answers that mean "nothing was done": not remembered, so a corrected retry may reuse the key.
NOT_STORED = {422, 429}


def purge_expired(tx: Tx, now: datetime) -> int:
    """Forget keys older than the retention window."""
    result = tx.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.created_at < now - RETENTION)
    )
    return int(getattr(result, "rowcount", 0) or 0)


View = Callable[P, Response | tuple[Response, int]]


def idempotent(body: type[BaseModel] | None = None) -> Callable[[View[P]], Callable[P, Response]]:
    """Make a POST view idempotent; `body` is the model its request body is parsed as."""

    def decorate(view: View[P]) -> Callable[P, Response]:
        return _idempotent(view, body)

    return decorate


def _canonical_request(body: type[BaseModel] | None) -> bytes:
    """The request's meaning: method, path and the validated body (a 422 when it is invalid)."""
    data = request.get_data(cache=True)
    meaning = parse_body(body).model_dump_json().encode() if body is not None and data else data
    return request.method.encode() + b" " + request.path.encode() + b"\n" + meaning


def _idempotent(view: View[P], body: type[BaseModel] | None) -> Callable[P, Response]:
    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response:
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return make_response(view(*args, **kwargs))
        if not key or len(key) > MAX_KEY_LENGTH:
            raise RequestValidationError(
                [
                    {
                        "loc": ["header", "Idempotency-Key"],
                        "msg": f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters",
                        "type": "string_too_long" if key else "string_too_short",
                    }
                ]
            )
        caller = current_caller()
        scoped_key = f"{caller.environment.value}:{key}"
        digest = hashlib.sha256(_canonical_request(body)).hexdigest()
        services = current_services()
        now = services.clock()
        replay = _claim(services.db.transaction, caller.account_id, scoped_key, digest, now)
        if replay is not None:
            return replay
        try:
            response = make_response(view(*args, **kwargs))
        except Exception:
            _release(services.db.transaction, caller.account_id, scoped_key)
            raise
        if response.status_code >= 500 or response.status_code in NOT_STORED:
            _release(services.db.transaction, caller.account_id, scoped_key)
        else:
            _remember(services.db.transaction, caller.account_id, scoped_key, response)
        return response

    return wrapper


TxFactory = Callable[[], "contextlib.AbstractContextManager[Tx]"]


def _find(tx: Tx, account_id: str, key: str) -> IdempotencyRecord | None:
    return tx.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.account_id == account_id, IdempotencyRecord.key == key
        )
    )


def _claim(
    transaction: TxFactory, account_id: str, key: str, digest: str, now: datetime
) -> Response | None:
    """Return the remembered response, raise 409, or claim the key (None) for this request."""
    try:
        with transaction() as tx:
            record = _find(tx, account_id, key)
            if record is not None and record.created_at < now - RETENTION:
                tx.delete(record)
                tx.flush()
                record = None
            if record is None:
                tx.add(
                    IdempotencyRecord(
                        account_id=account_id, key=key, request_hash=digest, created_at=now
                    )
                )
                return None
            if record.request_hash != digest:
                raise Conflict("Idempotency-Key was already used with a different request")
            if record.status_code is None:
                raise Conflict("A request with this Idempotency-Key is still being processed")
            replay = Response(record.body, status=record.status_code, mimetype="application/json")
            replay.headers["Idempotent-Replayed"] = "true"
            return replay
    except IntegrityError:
        raise Conflict("A request with this Idempotency-Key is still being processed") from None


def _remember(transaction: TxFactory, account_id: str, key: str, response: Response) -> None:
    with transaction() as tx:
        record = _find(tx, account_id, key)
        if record is not None:
            record.status_code = response.status_code
            record.body = response.get_data(as_text=True)


def _release(transaction: TxFactory, account_id: str, key: str) -> None:
    with transaction() as tx:
        record = _find(tx, account_id, key)
        if record is not None:
            tx.delete(record)
