"""Stream audit events as JSON lines for a SIEM, without holding them in memory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any, TextIO, cast

import sqlalchemy as sa

from clinicbridge.audit.chain import ENCODING_VERSION
from clinicbridge.audit.models import AuditEvent

BATCH_SIZE = 2_000
_EVENTS = cast(sa.Table, AuditEvent.__table__)


def event_json(row: Any) -> dict[str, Any]:
    """One event as a JSON-ready mapping: every column, times in RFC 3339 UTC."""
    data = dict(row._mapping)
    moment = data["occurred_at"].isoformat(timespec="microseconds")
    data["occurred_at"] = moment.replace("+00:00", "Z")
    data["encoding"] = ENCODING_VERSION
    return data


def iter_events(
    conn: sa.Connection,
    *,
    since: datetime | None = None,
    tenant_id: str | None = None,
    batch_size: int = BATCH_SIZE,
) -> Iterator[dict[str, Any]]:
    """Events in chain order (tenant, then seq), fetched ``batch_size`` rows at a time."""
    # yield_per: a server-side cursor on PostgreSQL, fetchmany batches on SQLite.
    stmt = (
        sa.select(_EVENTS)
        .order_by(_EVENTS.c.tenant_id, _EVENTS.c.seq)
        .execution_options(yield_per=batch_size)
    )
    if tenant_id is not None:
        stmt = stmt.where(_EVENTS.c.tenant_id == tenant_id)
    if since is not None:
        stmt = stmt.where(_EVENTS.c.occurred_at >= since)
    result = conn.execute(stmt)
    try:
        for batch in result.partitions():
            for row in batch:
                yield event_json(row)
    finally:
        result.close()


def export_jsonl(
    engine: sa.Engine,
    out: TextIO,
    *,
    since: datetime | None = None,
    tenant_id: str | None = None,
) -> int:
    """Write one JSON object per line to ``out``; returns how many."""
    count = 0
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    with engine.connect() as conn, conn.begin():
        for data in iter_events(conn, since=since, tenant_id=tenant_id):
            out.write(dumps(data))
            out.write("\n")
            count += 1
    return count
