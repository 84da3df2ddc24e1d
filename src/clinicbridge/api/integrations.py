"""``/api/v1/connectors`` (the catalog) and ``/api/v1/integrations`` (a clinic's connections)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, Response

from clinicbridge.api.deps import DB, Paging, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.schemas import ListOut
from clinicbridge.core.context import Ctx
from clinicbridge.integrations import service
from clinicbridge.integrations.registry import IntegrationRegistry, integrations
from clinicbridge.integrations.schemas import (
    IntegrationCreate,
    IntegrationCreated,
    IntegrationOut,
    IntegrationUpdate,
    RotationOut,
    SecretRotation,
    TestOut,
)
from clinicbridge.vault.service import Vault
from clinicbridge.vault.shared import shared_vault

router = APIRouter(tags=["integrations"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("integrations:read")]
Manager = Annotated[Ctx, require("integrations:manage")]


def _registry(request: Request) -> IntegrationRegistry:
    return getattr(request.app.state, "integrations", integrations)


def _vault(request: Request) -> Vault:
    return shared_vault(request.app.state.db, request.app.state.settings.master_key_file)


def _out(request: Request, row: Any) -> IntegrationOut:
    registry = _registry(request)
    return service.to_out(
        row, registry.connector(row.connector), request.app.state.settings.public_base_url
    )


@router.get("/connectors", response_model=ListOut[dict[str, Any]])
def list_connectors(request: Request, ctx: Reader) -> ListOut[dict[str, Any]]:
    """Installed connectors with the JSON schemas of their credentials and settings."""
    connectors = _registry(request).connectors.values()
    return ListOut(data=[c.describe() for c in sorted(connectors, key=lambda c: c.key)])


@router.get("/integrations", response_model=ListOut[IntegrationOut])
def list_integrations(
    request: Request, db: DB, ctx: Reader, page: Paging
) -> ListOut[IntegrationOut]:
    with db.read() as session:
        result = service.list_integrations(
            session, ctx, limit=page.limit, starting_after=page.starting_after
        )
        return ListOut.of(result, lambda r: _out(request, r))


@router.post("/integrations", status_code=201, response_model=IntegrationCreated)
def create_integration(
    request: Request, body: IntegrationCreate, db: DB, ctx: Manager
) -> IntegrationCreated:
    with db.write() as session:
        created = service.create_integration(
            session, ctx, _vault(request), _registry(request), body
        )
        out = _out(request, created.integration).model_dump()
    return IntegrationCreated(**out, webhook_secret=created.generated_secret)


@router.get("/integrations/{integration_id}", response_model=IntegrationOut)
def get_integration(request: Request, integration_id: str, db: DB, ctx: Reader) -> IntegrationOut:
    with db.read() as session:
        return _out(request, service.get_integration(session, ctx, integration_id))


@router.patch("/integrations/{integration_id}", response_model=IntegrationOut)
def update_integration(
    request: Request, integration_id: str, body: IntegrationUpdate, db: DB, ctx: Manager
) -> IntegrationOut:
    with db.write() as session:
        row = service.update_integration(
            session, ctx, _vault(request), _registry(request), integration_id, body
        )
        return _out(request, row)


@router.delete("/integrations/{integration_id}", status_code=204)
def delete_integration(integration_id: str, db: DB, ctx: Manager) -> Response:
    with db.write() as session:
        service.delete_integration(session, ctx, integration_id)
    return Response(status_code=204)


@router.post("/integrations/{integration_id}/test", response_model=TestOut)
def test_integration(request: Request, integration_id: str, db: DB, ctx: Manager) -> TestOut:
    """Run the connector's connection test (a real, cheap API call) and record the result."""
    result, status = service.test_integration(
        db,
        ctx,
        _vault(request),
        _registry(request),
        integration_id,
        transport=getattr(request.app.state, "outbound_transport", None),
    )
    return TestOut(ok=result.ok, message=result.message, status=status, tested_at=ctx.now)


@router.post("/integrations/{integration_id}/rotate-webhook-secret", response_model=RotationOut)
def rotate_webhook_secret(
    request: Request,
    integration_id: str,
    db: DB,
    ctx: Manager,
    body: SecretRotation | None = None,
) -> RotationOut:
    """Install a new webhook secret; the previous one keeps verifying for 24 hours."""
    with db.write() as session:
        generated, until = service.rotate_webhook_secret(
            session,
            ctx,
            _vault(request),
            _registry(request),
            integration_id,
            body.webhook_secret if body else None,
        )
    return RotationOut(webhook_secret=generated, previous_valid_until=until)
