"""``clinicbridge jobs``: inspect, retry, cancel and purge background jobs."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from clinicbridge import cli_common as common

if TYPE_CHECKING:
    from clinicbridge.jobs.models import Job

jobs_app = typer.Typer(help="Background jobs.", no_args_is_help=True)
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if not match:
        raise typer.BadParameter("use a number and a unit, e.g. 30d, 12h, 90m")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def job_json(job: Job, *, full: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": job.id,
        "tenant_id": job.tenant_id,
        "queue": job.queue,
        "kind": job.kind,
        "state": job.state,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "run_at": job.run_at.isoformat(),
        "last_error": job.last_error,
    }
    if full:
        data |= {
            "payload": job.payload,
            "dedupe_key": job.dedupe_key,
            "locked_by": job.locked_by,
            "locked_until": job.locked_until.isoformat() if job.locked_until else None,
            "created_at": job.created_at.isoformat(),
            "started_at": job.started_at.isoformat() if job.started_at else None,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        }
    return data


def _audit(
    session: Any,
    tenant_id: str | None,
    action: str,
    job_id: str | None,
    now: Any,
    diff: dict[str, Any],
) -> None:
    from clinicbridge.audit import PLATFORM, record_system

    record_system(
        session, tenant_id or PLATFORM, action, "job", job_id, now=now, actor_id="cli", diff=diff
    )


@jobs_app.command("list")
def list_command(
    state: Annotated[str | None, typer.Option(help="pending, running, failed, dead, ...")] = None,
    kind: Annotated[str | None, typer.Option(help="Only jobs of this kind.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this clinic's jobs.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
) -> None:
    """List jobs, oldest first, one JSON object per line."""
    from clinicbridge.jobs.queue import STATES, list_jobs

    if state is not None and state not in STATES:
        common.fail(f"--state: must be one of {', '.join(STATES)}")
    db = common.open_database(common.settings_or_exit())
    with db.read() as session:
        page = list_jobs(session, tenant_id=tenant, state=state, kind=kind, limit=limit)
        for job in page.items:
            common.print_json(job_json(job))


@jobs_app.command("show")
def show_command(job_id: Annotated[str, typer.Argument(help="Job id (job_...).")]) -> None:
    """Show one job with its payload and last error."""
    from clinicbridge.core.errors import NotFoundError
    from clinicbridge.jobs.queue import get_job

    db = common.open_database(common.settings_or_exit())
    with db.read() as session:
        try:
            common.print_json(job_json(get_job(session, job_id), full=True))
        except NotFoundError as exc:
            common.fail(exc.detail, 1)


@jobs_app.command("retry")
def retry_command(
    job_id: Annotated[str | None, typer.Argument(help="Job id (job_...).")] = None,
    all_dead: Annotated[bool, typer.Option("--all-dead", help="Retry every dead job.")] = False,
    kind: Annotated[str | None, typer.Option(help="With --all-dead: only this kind.")] = None,
) -> None:
    """Run a dead, failed or cancelled job again now (fresh attempt budget)."""
    from clinicbridge.core.clock import SystemClock
    from clinicbridge.core.errors import ClinicBridgeError
    from clinicbridge.jobs.queue import retry_dead, retry_job

    if (job_id is None) == (not all_dead):
        common.fail("give a job id or --all-dead (not both)")
    db = common.open_database(common.settings_or_exit())
    now = SystemClock().now()
    try:
        with db.write() as session:
            if job_id is not None:
                job = retry_job(session, job_id, now)
                _audit(session, job.tenant_id, "job.retry", job.id, now, {"kind": job.kind})
                common.print_json(job_json(job))
            else:
                retried = retry_dead(session, now, kind=kind)
                _audit(
                    session,
                    None,
                    "job.retry_all_dead",
                    None,
                    now,
                    {"kind": kind, "retried": retried},
                )
                common.print_json({"retried": retried})
    except ClinicBridgeError as exc:
        common.fail(exc.detail, 1)


@jobs_app.command("cancel")
def cancel_command(job_id: Annotated[str, typer.Argument(help="Job id (job_...).")]) -> None:
    """Cancel a job that has not finished."""
    from clinicbridge.core.clock import SystemClock
    from clinicbridge.core.errors import ClinicBridgeError
    from clinicbridge.jobs.queue import cancel_job

    db = common.open_database(common.settings_or_exit())
    try:
        with db.write() as session:
            now = SystemClock().now()
            job = cancel_job(session, job_id, now)
            _audit(session, job.tenant_id, "job.cancel", job.id, now, {"kind": job.kind})
            common.print_json(job_json(job))
    except ClinicBridgeError as exc:
        common.fail(exc.detail, 1)


@jobs_app.command("purge")
def purge_command(
    older_than: Annotated[str, typer.Option(help="Age, e.g. 30d, 12h.")] = "30d",
    include_dead: Annotated[
        bool, typer.Option("--include-dead", help="Also delete dead jobs.")
    ] = False,
) -> None:
    """Delete finished jobs (succeeded, cancelled; dead with --include-dead)."""
    from clinicbridge.core.clock import SystemClock
    from clinicbridge.jobs.queue import purge

    age = parse_duration(older_than)
    states = ("succeeded", "cancelled", "dead") if include_dead else ("succeeded", "cancelled")
    db = common.open_database(common.settings_or_exit())
    with db.write() as session:
        deleted = purge(session, SystemClock().now() - age, states=states)
    common.print_json({"deleted": deleted})
