"""Changing a project's settings: merge, validate, store, and log who changed what, when.

The API, the command line and the dashboard all change settings here, so a change is validated
the same way everywhere and every change is in `setting_changes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session as Tx

from payments.crypto import Sealer
from payments.outbox import rotate_secret
from payments.project_settings import (
    ProjectChanges,
    ProjectSettings,
    flatten,
    merge_patch,
    project_document,
)
from payments.store import Project, SettingChange

WEBHOOK_SECRET_SETTING = "webhook_secret"  # noqa: S105  # the audit log's name for the setting


@dataclass(frozen=True)
class Changed:
    """The settings after a change, and the webhook secret when this change created one."""

    settings: ProjectSettings
    changed: list[str]
    webhook_secret: str | None = None


def change_project(
    tx: Tx,
    project: Project,
    patch: Mapping[str, Any],
    *,
    actor: str,
    now: datetime,
    sealer: Sealer,
    live: bool = False,
) -> Changed:
    """Apply a JSON merge patch to the project's settings; raises pydantic.ValidationError.

    Nothing is stored when any value is invalid. The first webhook URL makes a signing secret
    (`sealer` seals it); the plaintext is returned once. `live`: a live key sent the change.
    """
    before = project_document(project)
    widget = patch.get("widget")
    # A live key may add only https origins (origins it does not touch are not re-judged).
    new_origins = isinstance(widget, Mapping) and "allowed_origins" in widget
    validated = ProjectChanges.model_validate(
        merge_patch(before, patch), context={"live": live and new_origins}
    )
    after = validated.model_dump(mode="json")
    old, new = flatten(before), flatten(after)
    changed = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
    for setting in changed:
        _audit(tx, project, actor, now, setting, old.get(setting), new.get(setting))
    project.webhook_url = after.pop("webhook_url")
    project.settings = after
    secret = None
    if project.webhook_url and project.webhook_secret_sealed is None:
        secret = rotate_secret(project, sealer)
    return Changed(ProjectSettings.model_validate(after), changed, secret)


def rotate_webhook_secret(
    tx: Tx, project: Project, *, actor: str, now: datetime, sealer: Sealer
) -> str:
    """A new signing secret, returned once; the audit log records the rotation, never a value."""
    had_one = project.webhook_secret_sealed is not None
    secret = rotate_secret(project, sealer)
    _audit(tx, project, actor, now, WEBHOOK_SECRET_SETTING, "set" if had_one else None, "rotated")
    return secret


def _audit(
    tx: Tx, project: Project, actor: str, now: datetime, setting: str, old: Any, new: Any
) -> None:
    tx.add(
        SettingChange(project_id=project.id, at=now, actor=actor, setting=setting, old=old, new=new)
    )


def setting_changes(tx: Tx, project: Project, *, limit: int = 100) -> list[SettingChange]:
    """The project's audit log, newest first."""
    return list(
        tx.scalars(
            select(SettingChange)
            .where(SettingChange.project_id == project.id)
            .order_by(SettingChange.at.desc(), SettingChange.id.desc())
            .limit(limit)
        )
    )
