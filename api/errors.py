"""The one place that turns exceptions into JSON: 422 `detail` lists, 401, 404, 409, 429, 5xx.

A 503 with `Retry-After` means nothing was done and the same request may be made again: the
database is unreachable, or a gateway did not answer a check the request depends on.

A 429 says why in `detail`; the widget breaker's also carries `error_code: "charges_paused"` and
`resume_at`, which the frame hands to `onFailure`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from flask import Flask, Response, jsonify
from pydantic import ValidationError
from sqlalchemy import exc
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from api.schemas import ChargeRefused
from payments.breaker import ChargesPaused
from payments.errors import Conflict, GatewayUnreachable, InvalidInput, NotFound
from payments.velocity import VelocityLimited

log = logging.getLogger(__name__)
DATABASE_RETRY_AFTER = 5  # seconds
GATEWAY_RETRY_AFTER = 30  # seconds


class RequestValidationError(Exception):
    """The request body or query failed validation; `errors` are already in the wire shape."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("request validation failed")
        self.errors = errors


def wire_errors(errors: Iterable[Any], prefix: tuple[str | int, ...]) -> list[dict[str, Any]]:
    """pydantic errors -> the seeds' ValidationError items (loc, msg, type and nothing else).

    Inputs are left out on purpose: they may carry card data.
    """
    return [
        {"loc": [*prefix, *error["loc"]], "msg": error["msg"], "type": error["type"]}
        for error in errors
    ]


def _json(status: int, body: dict[str, Any]) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(RequestValidationError)
    def _request_validation(error: RequestValidationError) -> Response:
        return _json(422, {"detail": error.errors})

    @app.errorhandler(ValidationError)
    def _validation(error: ValidationError) -> Response:
        return _json(422, {"detail": wire_errors(error.errors(), ("body",))})

    @app.errorhandler(InvalidInput)
    def _invalid(error: InvalidInput) -> Response:
        return _json(
            422, {"detail": [{"loc": list(error.loc), "msg": error.message, "type": error.kind}]}
        )

    @app.errorhandler(NotFound)
    def _not_found(error: NotFound) -> Response:
        return _json(404, {"detail": str(error)})

    @app.errorhandler(Conflict)
    def _conflict(error: Conflict) -> Response:
        return _json(409, {"detail": str(error)})

    @app.errorhandler(VelocityLimited)
    def _velocity(error: VelocityLimited) -> Response:
        response = _json(429, {"detail": str(error)})
        response.headers["Retry-After"] = str(error.retry_after)
        return response

    @app.errorhandler(ChargesPaused)
    def _paused(error: ChargesPaused) -> Response:
        body = ChargeRefused(detail=str(error), error_code=error.code, resume_at=error.resume_at)
        response = _json(429, body.model_dump(mode="json"))
        response.headers["Retry-After"] = str(error.retry_after)
        return response

    @app.errorhandler(GatewayUnreachable)
    def _gateway_unreachable(error: GatewayUnreachable) -> Response:
        response = _json(503, {"detail": str(error)})
        response.headers["Retry-After"] = str(GATEWAY_RETRY_AFTER)
        return response

    @app.errorhandler(DBAPIError)
    @app.errorhandler(exc.TimeoutError)
    def _database(error: Exception) -> Response:
        """The database is down or unreachable: a retryable 503, never a 500 with a trace."""
        unreachable = isinstance(error, OperationalError | InterfaceError | exc.TimeoutError) or (
            isinstance(error, DBAPIError) and error.connection_invalidated
        )
        if not unreachable:
            return _unexpected(error)
        log.error("database unavailable: %s", type(error).__name__)
        response = _json(503, {"detail": "Service temporarily unavailable; try again shortly"})
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER)
        return response

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Response:
        response = _json(error.code or 500, {"detail": error.description})
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.error("unhandled error: %s", type(error).__name__, exc_info=error)
        return _json(500, {"detail": "Internal server error"})
