"""``clinicbridge reminders``: plan appointment reminders in bulk."""

from __future__ import annotations

from typing import Annotated

import typer

from clinicbridge import cli_common as common

reminders_app = typer.Typer(help="Appointment reminders.", no_args_is_help=True)


@reminders_app.command("schedule")
def schedule(
    tenant: Annotated[str | None, typer.Option(help="Only this clinic (ten_...).")] = None,
    batch: Annotated[
        int, typer.Option(min=1, max=50_000, help="Bookings per transaction.")
    ] = 2_000,
) -> None:
    """Plan reminders for every upcoming booking that has none yet (safe to re-run);
    prints {"jobs": N} as JSON."""
    from clinicbridge.core.clock import SystemClock
    from clinicbridge.messaging.reminders import schedule_upcoming

    db = common.open_database(common.settings_or_exit())
    common.require_current_schema(db)
    jobs = schedule_upcoming(db, now=SystemClock().now(), tenant_id=tenant, batch=batch)
    common.print_json({"jobs": jobs})
