"""``clinicbridge webhooks``: look at the inbound inbox and replay processing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from clinicbridge import cli_common as common

if TYPE_CHECKING:
    from clinicbridge.webhooks.models import WebhookEvent

webhooks_app = typer.Typer(help="Inbound webhook events.", no_args_is_help=True)


def event_json(event: WebhookEvent, *, full: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": event.id,
        "tenant_id": event.tenant_id,
        "integration_id": event.integration_id,
        "provider_event_id": event.provider_event_id,
        "type": event.type,
        "status": event.status,
        "received_at": event.received_at.isoformat(),
        "attempts": event.attempts,
        "last_error": event.last_error,
    }
    if full:
        data |= {
            "payload": event.payload,
            "headers": event.headers,
            "raw_body_retained": event.raw_body is not None,
        }
    return data


@webhooks_app.command("list")
def list_command(
    tenant: Annotated[str | None, typer.Option(help="Only this clinic's events.")] = None,
    integration: Annotated[str | None, typer.Option(help="Only this integration's.")] = None,
    status: Annotated[
        str | None, typer.Option(help="received, processed, failed, dead, ...")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
) -> None:
    """List inbound events, oldest first, one JSON object per line."""
    import sqlalchemy as sa

    from clinicbridge.webhooks.models import WebhookEvent

    stmt = sa.select(WebhookEvent).order_by(WebhookEvent.id).limit(limit)
    for column, value in (
        (WebhookEvent.tenant_id, tenant),
        (WebhookEvent.integration_id, integration),
        (WebhookEvent.status, status),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    db = common.open_database(common.settings_or_exit())
    with db.read() as session:
        for event in session.scalars(stmt):
            common.print_json(event_json(event))


def _load(event_id: str) -> tuple[Any, Any]:
    from clinicbridge.webhooks.models import WebhookEvent

    db = common.open_database(common.settings_or_exit())
    with db.read() as session:
        event = session.get(WebhookEvent, event_id)
    if event is None:
        common.fail("No such webhook event.", 1)
    return db, event


@webhooks_app.command("show")
def show_command(event_id: Annotated[str, typer.Argument(help="Event id (whe_...).")]) -> None:
    """Show one event with its payload and the headers it came with."""
    _, event = _load(event_id)
    common.print_json(event_json(event, full=True))


@webhooks_app.command("replay")
def replay_command(event_id: Annotated[str, typer.Argument(help="Event id (whe_...).")]) -> None:
    """Run an event's processing again (handlers are idempotent)."""
    from clinicbridge.core.clock import SystemClock
    from clinicbridge.webhooks.processing import replay

    db, event = _load(event_id)
    with db.write() as session:
        common.print_json(
            event_json(replay(session, event.tenant_id, event_id, SystemClock().now()))
        )
