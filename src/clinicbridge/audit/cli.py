"""``clinicbridge audit``: verify the hash chains, export events for a SIEM."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from clinicbridge import cli_common as common

audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
PLATFORM_NAME = "platform"  # how --tenant names the chain of platform events ("")


def _chain_name(tenant_id: str) -> str:
    return f"clinic {tenant_id}" if tenant_id else "platform"


def parse_since(text: str) -> datetime:
    """ISO 8601 date or time; a time without a zone is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        common.fail("--since: expected an ISO 8601 time, e.g. 2026-01-05T00:00:00Z")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@audit_app.command("verify")
def verify_command(
    tenant: Annotated[
        str | None,
        typer.Option(help=f"Only this clinic's chain ('{PLATFORM_NAME}': platform events)."),
    ] = None,
) -> None:
    """Prove the hash chains; exit 1 naming the first changed, deleted or inserted event.

    Prints a JSON summary with each chain's head (seq and hash): keep a copy
    elsewhere, so that a rewrite of the whole log can be detected too.
    """
    from clinicbridge.audit.verify import verify_chains

    db = common.open_database(common.settings_or_exit())
    common.require_current_schema(db)
    chain = "" if tenant == PLATFORM_NAME else tenant
    verified, heads, problems = 0, [], []
    for report in verify_chains(db.engine, chain):
        verified += report.verified
        heads.append(
            {"tenant_id": report.tenant_id, "seq": report.head_seq, "hash": report.head_hash}
        )
        if report.error is not None:
            err = report.error
            problems.append(
                {
                    "tenant_id": report.tenant_id,
                    "kind": err.kind,
                    "seq": err.seq,
                    "event_id": err.event_id,
                    "detail": err.detail,
                }
            )
            typer.echo(f"error: {_chain_name(report.tenant_id)}: {err.detail}", err=True)
    summary: dict[str, Any] = {"ok": not problems, "verified": verified, "chains": len(heads)}
    common.print_json({**summary, "heads": heads, "problems": problems})
    if problems:
        raise typer.Exit(1)
    typer.echo(f"verified {verified} events in {len(heads)} chain(s)", err=True)


@audit_app.command("export")
def export_command(
    since: Annotated[
        str | None, typer.Option(help="Events at or after this ISO 8601 time (UTC if no zone).")
    ] = None,
    output_format: Annotated[str, typer.Option("--format", help="Output format: jsonl.")] = "jsonl",
    tenant: Annotated[
        str | None,
        typer.Option(help=f"Only this clinic's events ('{PLATFORM_NAME}': platform events)."),
    ] = None,
) -> None:
    """Stream events as JSON lines (one object per line) on stdout, in chain order."""
    if output_format != "jsonl":
        common.fail("--format: only 'jsonl' is supported")
    start = parse_since(since) if since else None
    from clinicbridge.audit.export import export_jsonl

    db = common.open_database(common.settings_or_exit())
    common.require_current_schema(db)
    chain = "" if tenant == PLATFORM_NAME else tenant
    try:
        count = export_jsonl(db.engine, sys.stdout, since=start, tenant_id=chain)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly
        # Point stdout at /dev/null so the interpreter's final flush does not fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(1) from None
    typer.echo(f"exported {count} events", err=True)
