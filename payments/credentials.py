"""Per-project, per-mode gateway credentials, sealed at rest and never shown again once set."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session as Tx

from gateways import build_gateway
from gateways.base import PaymentGateway
from payments.crypto import Sealer
from payments.model import Environment, Gateway
from payments.services import Services
from payments.store import GatewayCredential, Project

CREDENTIALS_PURPOSE = "gateway-credentials"


def set_credentials(
    tx: Tx,
    project: Project,
    gateway: Gateway,
    environment: Environment,
    values: Mapping[str, str],
    *,
    sealer: Sealer,
    now: datetime,
) -> None:
    sealed = sealer.seal(json.dumps(dict(values)).encode())
    row = tx.scalar(
        select(GatewayCredential).where(
            GatewayCredential.project_id == project.id,
            GatewayCredential.gateway == gateway.value,
            GatewayCredential.environment == environment.value,
        )
    )
    if row is None:
        tx.add(
            GatewayCredential(
                project_id=project.id,
                gateway=gateway.value,
                environment=environment.value,
                sealed=sealed,
                updated_at=now,
            )
        )
    else:
        row.sealed = sealed
        row.updated_at = now


def has_credentials(db: Connection | Tx, project_id: str, gateway: str, environment: str) -> bool:
    """Whether credentials are stored for this gateway and mode (without opening them)."""
    found = db.scalar(
        select(GatewayCredential.id).where(
            GatewayCredential.project_id == project_id,
            GatewayCredential.gateway == gateway,
            GatewayCredential.environment == environment,
        )
    )
    return found is not None


def load_credentials(
    tx: Tx, project_id: str, gateway: str, environment: str, *, sealer: Sealer
) -> dict[str, str] | None:
    sealed = tx.scalar(
        select(GatewayCredential.sealed).where(
            GatewayCredential.project_id == project_id,
            GatewayCredential.gateway == gateway,
            GatewayCredential.environment == environment,
        )
    )
    if sealed is None:
        return None
    values: dict[str, str] = json.loads(sealer.open(sealed))
    return values


def project_gateway(
    services: Services, project_id: str, gateway: str, environment: str
) -> PaymentGateway:
    """The project's adapter for a gateway and mode (the simulator in test mode without keys)."""
    with services.db.transaction() as tx:
        credentials = project_credentials(services, tx, project_id, gateway, environment)
    return gateway_with(services, gateway, environment, credentials)


def project_credentials(
    services: Services, tx: Tx, project_id: str, gateway: str, environment: str
) -> dict[str, str] | None:
    """The project's credentials for a gateway and mode, read in `tx` (None: none are set)."""
    sealer = services.sealer(CREDENTIALS_PURPOSE)
    return load_credentials(tx, project_id, gateway, environment, sealer=sealer)


def gateway_with(
    services: Services, gateway: str, environment: str, credentials: dict[str, str] | None
) -> PaymentGateway:
    """The adapter for a gateway and mode from credentials already read (`project_credentials`)."""
    return build_gateway(
        gateway,
        credentials,
        environment="live" if environment == "live" else "test",
        timeout=services.settings.gateway_timeout_seconds,
    )
