"""Parsing request bodies and queries into pydantic models, failing with the seeds' 422 shape.

`init_app` also turns away what no model should ever see: NUL characters (PostgreSQL cannot store
them in text) in a path, a query, a form or a JSON body, and streamed (chunked) bodies over the
size limit, which Werkzeug would otherwise cut short at the limit instead of refusing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

from flask import Flask, current_app, request
from pydantic import BaseModel, ValidationError
from pydantic_core import from_json
from werkzeug.exceptions import RequestEntityTooLarge

from api.errors import RequestValidationError, wire_errors
from payments.errors import NotFound

M = TypeVar("M", bound=BaseModel)
NUL = "\x00"
FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


def _nul_error(loc: list[str | int]) -> dict[str, Any]:
    return {"loc": loc, "msg": "Text must not contain NUL characters", "type": "string_nul"}


def _nul_locations(value: Any, loc: list[str | int]) -> Iterator[list[str | int]]:
    """Where in a parsed JSON document a string holds a NUL character."""
    if isinstance(value, str) and NUL in value:
        yield loc
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _nul_locations(item, [*loc, key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nul_locations(item, [*loc, index])


def parse_body(model: type[M]) -> M:
    """The JSON body as `model`; wrong content type and malformed JSON are 422s like any other."""
    if request.mimetype != "application/json":
        raise RequestValidationError(
            [
                {
                    "loc": ["body"],
                    "msg": "Content-Type must be application/json",
                    "type": "content_type",
                }
            ]
        )
    data = request.get_data(cache=True)
    try:
        document = from_json(data)
    except ValueError:
        document = None  # malformed: the model's own error says how
    nuls = [_nul_error(loc) for loc in _nul_locations(document, ["body"])]
    if nuls:
        raise RequestValidationError(nuls)
    try:
        return model.model_validate_json(data)
    except ValidationError as error:
        raise RequestValidationError(wire_errors(error.errors(), ("body",))) from None


def parse_query(model: type[M]) -> M:
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as error:
        raise RequestValidationError(wire_errors(error.errors(), ("query",))) from None


def parse_path(model: type[M], **values: str) -> M:
    """Path parameters as `model`: a malformed one is a 422, as FastAPI answers (the seeds)."""
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise RequestValidationError(wire_errors(error.errors(), ("path",))) from None


def init_app(app: Flask) -> None:
    """Register before anything that reads the request (the rate limiter looks up sessions)."""

    @app.before_request
    def _refuse_hostile_input() -> None:
        if any(NUL in str(value) for value in (request.view_args or {}).values()):
            raise NotFound("Not found")  # no id holds a NUL character
        if request.content_length is None and "wsgi.input_terminated" in request.environ:
            # A streamed body: Werkzeug reads at most the limit and stops there without a word.
            limit = current_app.config["MAX_CONTENT_LENGTH"]
            if len(request.get_data(cache=True)) >= limit:
                raise RequestEntityTooLarge()
        fields = [("query", request.args)]
        if request.mimetype in FORMS:
            fields.append(("body", request.form))
        nuls = [
            _nul_error([where, name])
            for where, values in fields
            for name, value in values.items(multi=True)
            if NUL in value
        ]
        if nuls:
            raise RequestValidationError(nuls)
