"""API-key authentication: Bearer mvn_test_… / mvn_live_…, looked up by hash."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from flask import g, request
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Unauthorized

from api.extension import current_services
from payments.accounts import Caller, authenticate

P = ParamSpec("P")
R = TypeVar("R")


def _unauthorized(message: str) -> Unauthorized:
    return Unauthorized(message, www_authenticate=WWWAuthenticate("bearer"))


def bearer_token() -> str | None:
    """The token of an `Authorization: Bearer …` header, or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def require_api_key(view: Callable[P, R]) -> Callable[P, R]:
    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        token = bearer_token()
        if token is None:
            raise _unauthorized("Not authenticated")
        with current_services().db.statements() as connection:
            caller = authenticate(connection, token)
        if caller is None:
            raise _unauthorized("Invalid or revoked API key")
        g.caller = caller
        return view(*args, **kwargs)

    return wrapper


def current_caller() -> Caller:
    caller: Caller = g.caller
    return caller
