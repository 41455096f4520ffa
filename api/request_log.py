"""Request ids for the log: the caller's X-Request-Id when sane, else a new one, echoed back."""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request

from payments.logs import request_id_var, session_id_var

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def init_app(app: Flask) -> None:
    """A request id per request, bound to the log context with the path's session id."""

    @app.before_request
    def _start() -> None:
        offered = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = offered if _REQUEST_ID_SAFE.match(offered) else uuid.uuid4().hex
        g.log_tokens = (
            request_id_var.set(g.request_id),
            session_id_var.set((request.view_args or {}).get("session_id")),
        )

    @app.after_request
    def _echo(response: Response) -> Response:
        if "request_id" in g:
            response.headers[REQUEST_ID_HEADER] = g.request_id
        return response

    @app.teardown_request
    def _end(_error: BaseException | None) -> None:
        tokens = g.pop("log_tokens", None)
        if tokens is not None:
            request_id_var.reset(tokens[0])
            session_id_var.reset(tokens[1])
