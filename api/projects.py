"""Blueprint: the key's account and projects (/v1/auth/check, /v1/projects) and their settings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify
from pydantic import RootModel

from api.auth import current_caller, require_api_key
from api.extension import current_services
from api.schemas import AccountOut, AuthCheck, ProjectList, ProjectOut, ProjectSummary
from api.validation import parse_body
from payments.accounts import account_projects, find_account_project
from payments.model import Environment
from payments.outbox import WEBHOOK_SECRET_PURPOSE
from payments.project_settings import project_document, project_settings
from payments.projects import change_project
from payments.store import Account, Project

bp = Blueprint("projects", __name__, url_prefix="/v1")


class MergePatch(RootModel[dict[str, Any]]):
    """A JSON object; its values are validated against the project document once merged."""


def project_out(
    project: Project, webhook_secret: str | None = None, paused_until: datetime | None = None
) -> ProjectOut:
    return ProjectOut.model_validate(
        project_document(project)
        | {
            "id": project.id,
            "slug": project.slug,
            "name": project.name,
            "created_at": project.created_at,
            "webhook_secret_set": project.webhook_secret_sealed is not None,
            "webhook_secret": webhook_secret,
            "widget_charges_paused_until": paused_until,
        }
    )


def _widget_paused_until(project: Project) -> datetime | None:
    """When the decline breaker lets the project's widget charges in the key's mode go again."""
    services = current_services()
    return services.breaker.paused_until(project.id, current_caller().environment, services.clock())


@bp.get("/auth/check")
@require_api_key
def auth_check() -> Response:
    caller = current_caller()
    with current_services().db.transaction() as tx:
        account = tx.get_one(Account, caller.account_id)
        body = AuthCheck(
            mode=caller.environment,
            key_prefix=caller.key_prefix,
            account=AccountOut(id=account.id, name=account.name),
        )
    return jsonify(body.model_dump(mode="json"))


@bp.get("/projects")
@require_api_key
def list_projects() -> Response:
    with current_services().db.transaction() as tx:
        projects = account_projects(tx, current_caller().account_id)
        body = ProjectList(
            data=[
                ProjectSummary(
                    id=p.id,
                    slug=p.slug,
                    name=p.name,
                    display_name=project_settings(p).display_name,
                    created_at=p.created_at,
                )
                for p in projects
            ]
        )
    return jsonify(body.model_dump(mode="json"))


@bp.get("/projects/<slug>")
@require_api_key
def get_project(slug: str) -> Response:
    with current_services().db.transaction() as tx:
        project = find_account_project(tx, current_caller().account_id, slug)
        out = project_out(project, paused_until=_widget_paused_until(project))
        return jsonify(out.model_dump(mode="json"))


@bp.patch("/projects/<slug>")
@require_api_key
def patch_project(slug: str) -> Response:
    """A JSON merge patch (RFC 7396) of the project document: send what changes; null resets."""
    patch = parse_body(MergePatch).root
    services = current_services()
    caller = current_caller()
    with services.db.transaction() as tx:
        project = find_account_project(tx, caller.account_id, slug)
        changed = change_project(
            tx,
            project,
            patch,
            actor=caller.actor,
            now=services.clock(),
            sealer=services.sealer(WEBHOOK_SECRET_PURPOSE),
            live=caller.environment == Environment.LIVE,
        )
        out = project_out(project, changed.webhook_secret, _widget_paused_until(project))
        return jsonify(out.model_dump(mode="json"))
