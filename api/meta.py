"""Blueprint: liveness and the machine-readable contract."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from api.openapi import OPERATIONS, build_document

bp = Blueprint("meta", __name__)


@bp.get("/health")
def health() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/openapi.json")
def openapi_document() -> Response:
    return jsonify(build_document(OPERATIONS))
