"""Parsing request bodies and queries into pydantic models, failing with the seeds' 422 shape."""

from __future__ import annotations

from typing import TypeVar

from flask import request
from pydantic import BaseModel, ValidationError

from api.errors import RequestValidationError, wire_errors

M = TypeVar("M", bound=BaseModel)


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
    try:
        return model.model_validate_json(request.get_data(cache=True))
    except ValidationError as error:
        raise RequestValidationError(wire_errors(error.errors(), ("body",))) from None


def parse_query(model: type[M]) -> M:
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as error:
        raise RequestValidationError(wire_errors(error.errors(), ("query",))) from None
