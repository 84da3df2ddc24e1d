"""Each clinic's integrations: create, change, test, rotate the webhook secret, delete.

Credentials are validated by the connector's schema, sealed by the vault in the
same transaction, and never leave it again except as hints (last four
characters, where the provider shows them too).
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from clinicbridge.audit import record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import FieldError, InvalidInputError, validation_errors
from clinicbridge.core.ids import new_id
from clinicbridge.core.pagination import Page, paginate
from clinicbridge.core.secrets import Secret
from clinicbridge.core.tenancy import get_scoped, scoped_select
from clinicbridge.db.engine import Database
from clinicbridge.integrations.connector import Connector, ConnectorContext, TestResult
from clinicbridge.integrations.models import Integration
from clinicbridge.integrations.registry import IntegrationRegistry
from clinicbridge.integrations.schemas import (
    IntegrationCreate,
    IntegrationOut,
    IntegrationUpdate,
    LastTest,
)
from clinicbridge.vault.service import Vault

ROTATION_GRACE = timedelta(hours=24)


def generate_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _validated(schema: type[BaseModel], data: dict[str, Any], prefix: str) -> dict[str, Any]:
    try:
        model = schema.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(
            [
                FieldError(f"{prefix}.{e.field}", e.message, e.code)
                for e in validation_errors(exc.errors())
            ]
        ) from None
    return model.model_dump(mode="json", exclude_none=True)


def _connector(registry: IntegrationRegistry, key: str) -> Connector:
    connector = registry.connector(key)
    if connector is None:
        raise InvalidInputError.one("connector", f"unknown connector '{key}'", "unknown_connector")
    return connector


def _hints(connector: Connector, creds: dict[str, str]) -> dict[str, str | None]:
    return {
        name: (f"…{value[-4:]}" if name in connector.hinted_fields and len(value) >= 8 else None)
        for name, value in creds.items()
    }


def to_out(row: Integration, connector: Connector | None, base_url: str) -> IntegrationOut:
    inbound = connector is not None and connector.verifier is not None
    return IntegrationOut(
        id=row.id,
        connector=row.connector,
        name=row.name,
        enabled=row.enabled,
        status=row.status,
        webhook_url=f"{base_url}/webhooks/{row.id}" if inbound else None,
        credentials_set=bool(row.credentials),
        credential_hints=row.credential_hints,
        settings=row.settings,
        last_test=LastTest(at=row.last_test_at, ok=row.last_test_ok, error=row.last_test_error),
        created_by=row.created_by,
        updated_by=row.updated_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@dataclass(frozen=True)
class Created:
    integration: Integration
    generated_secret: str | None


def create_integration(
    session: Session, ctx: Ctx, vault: Vault, registry: IntegrationRegistry, data: IntegrationCreate
) -> Created:
    connector = _connector(registry, data.connector)
    creds = dict(data.credentials)
    generated = None
    field = connector.webhook_secret_field
    if connector.generates_webhook_secret and field and not creds.get(field):
        creds[field] = generated = generate_webhook_secret()
    settings_in = dict(data.settings)
    connector.complete(creds, settings_in)
    creds = _validated(connector.credentials_schema, creds, "credentials")
    settings = _validated(connector.settings_schema, settings_in, "settings")
    integration_id = new_id("int")
    row = Integration(
        id=integration_id,
        tenant_id=ctx.tenant_id,
        connector=connector.key,
        name=data.name,
        enabled=data.enabled,
        status="active" if data.enabled else "disabled",
        credentials=vault.seal(
            session, ctx.tenant_id, integration_id, {k: Secret(v) for k, v in creds.items()}
        ),
        credential_hints=_hints(connector, creds),
        settings=settings,
        created_by=ctx.actor_id,
        updated_by=ctx.actor_id,
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    session.add(row)
    session.flush()
    record(
        session,
        ctx,
        "integration.create",
        "integration",
        row.id,
        diff={
            "connector": connector.key,
            "name": data.name,
            "settings": settings,
            "credentials": sorted(creds),
        },
    )
    return Created(row, generated)


def list_integrations(
    session: Session, ctx: Ctx, *, limit: int, starting_after: str | None
) -> Page[Integration]:
    return paginate(
        session, scoped_select(Integration, ctx.tenant_id), Integration.id, limit, starting_after
    )


def get_integration(session: Session, ctx: Ctx, integration_id: str) -> Integration:
    return get_scoped(session, Integration, ctx.tenant_id, id=integration_id)


def open_credentials(vault: Vault, row: Integration) -> dict[str, Secret]:
    return vault.open(row.tenant_id, row.id, row.credentials)


def update_integration(
    session: Session,
    ctx: Ctx,
    vault: Vault,
    registry: IntegrationRegistry,
    integration_id: str,
    data: IntegrationUpdate,
) -> Integration:
    row = get_integration(session, ctx, integration_id)
    connector = _connector(registry, row.connector)
    changed: dict[str, Any] = {}
    if data.name is not None and data.name != row.name:
        changed["name"] = [row.name, data.name]
        row.name = data.name
    if data.settings is None and data.credentials is None:
        creds_in: dict[str, Any] = {}
        settings_in: dict[str, Any] = dict(row.settings)
    else:
        current = {k: s.reveal() for k, s in open_credentials(vault, row).items()}
        creds_in = {**current, **(data.credentials or {})}
        settings_in = {**row.settings, **(data.settings or {})}
        connector.complete(creds_in, settings_in)
    if data.settings is not None or settings_in != row.settings:
        settings = _validated(
            connector.settings_schema,
            {k: v for k, v in settings_in.items() if v is not None},
            "settings",
        )
        changed["settings"] = [row.settings, settings]
        row.settings = settings
    if data.credentials is not None:
        creds = _validated(
            connector.credentials_schema,
            {k: v for k, v in creds_in.items() if v is not None},
            "credentials",
        )
        row.credentials = vault.seal(
            session, row.tenant_id, row.id, {k: Secret(v) for k, v in creds.items()}
        )
        row.credential_hints = _hints(connector, creds)
        changed["credentials"] = sorted(data.credentials)  # names only, never values
    if data.enabled is not None and data.enabled != row.enabled:
        changed["enabled"] = [row.enabled, data.enabled]
        row.enabled = data.enabled
        row.status = "active" if data.enabled else "disabled"
    row.updated_at, row.updated_by = ctx.now, ctx.actor_id
    session.flush()
    record(session, ctx, "integration.update", "integration", row.id, diff=changed)
    return row


def delete_integration(session: Session, ctx: Ctx, integration_id: str) -> None:
    row = get_integration(session, ctx, integration_id)
    record(
        session,
        ctx,
        "integration.delete",
        "integration",
        row.id,
        diff={"connector": row.connector, "name": row.name},
    )
    session.delete(row)
    session.flush()


def rotate_webhook_secret(
    session: Session,
    ctx: Ctx,
    vault: Vault,
    registry: IntegrationRegistry,
    integration_id: str,
    new_secret: str | None,
) -> tuple[str | None, datetime | None]:
    """Install a new webhook secret; the old one keeps verifying for 24 hours."""
    row = get_integration(session, ctx, integration_id)
    connector = _connector(registry, row.connector)
    field = connector.webhook_secret_field
    if field is None or connector.verifier is None:
        raise InvalidInputError.one("connector", "this connector receives no webhooks")
    generated = None
    if new_secret is None:
        if not connector.generates_webhook_secret:
            raise InvalidInputError.one(
                "webhook_secret", f"required: {connector.display_name} issues the secret"
            )
        new_secret = generated = generate_webhook_secret()
    current = {k: s.reveal() for k, s in open_credentials(vault, row).items()}
    creds = _validated(connector.credentials_schema, {**current, field: new_secret}, "credentials")
    old = row.credentials.get(field)
    row.previous_webhook_secret = old
    row.previous_secret_expires_at = ctx.now + ROTATION_GRACE if old else None
    row.credentials = vault.seal(
        session, row.tenant_id, row.id, {k: Secret(v) for k, v in creds.items()}
    )
    row.credential_hints = _hints(connector, creds)
    row.updated_at, row.updated_by = ctx.now, ctx.actor_id
    session.flush()
    record(session, ctx, "integration.rotate_webhook_secret", "integration", row.id)
    return generated, row.previous_secret_expires_at


def webhook_secrets(
    vault: Vault, row: Integration, connector: Connector, now: datetime
) -> list[str]:
    """Every secret a signature may be made with now: the current, and the previous
    one during its grace period."""
    field = connector.webhook_secret_field
    if field is None:
        return []
    found = []
    if field in row.credentials:
        found.append(vault.decrypt_field(row.tenant_id, row.id, field, row.credentials[field]))
    expires = row.previous_secret_expires_at
    if row.previous_webhook_secret and expires is not None and expires > now:
        found.append(vault.decrypt_field(row.tenant_id, row.id, field, row.previous_webhook_secret))
    return [s.reveal() for s in found]


def test_integration(
    db: Database,
    ctx: Ctx,
    vault: Vault,
    registry: IntegrationRegistry,
    integration_id: str,
    *,
    transport: Any = None,
) -> tuple[TestResult, str]:
    """Run the connector's real, cheap API call; no transaction is held during the call."""
    with db.read() as session:
        row = get_integration(session, ctx, integration_id)
        connector = _connector(registry, row.connector)
        conn_ctx = ConnectorContext(
            db=db,
            tenant_id=row.tenant_id,
            integration_id=row.id,
            credentials=open_credentials(vault, row),
            settings=dict(row.settings),
            transport=transport,
        )
    result = connector.test_connection(conn_ctx)
    with db.write() as session:
        row = get_integration(session, ctx, integration_id)
        row.last_test_at, row.last_test_ok = ctx.now, result.ok
        row.last_test_error = None if result.ok else result.message[:500]
        if row.enabled:
            row.status = (
                "active" if result.ok else ("needs_reauth" if result.needs_reauth else "error")
            )
        record(
            session,
            ctx,
            "integration.test",
            "integration",
            row.id,
            outcome="success" if result.ok else "failure",
        )
        return result, row.status
