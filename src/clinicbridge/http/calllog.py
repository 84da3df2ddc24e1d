"""The call log: one ``http_calls`` row per outbound call, kept 30 days.

A row describes the whole call as its caller saw it: the outcome of the last
attempt (status, success, error class), how many attempts it took (``attempt``)
and the time spent waiting on the provider summed over attempts (``duration_ms``;
our own backoff and rate-limit waits are left out, so latency describes the
provider). Calls refused locally by the breaker or the rate limiter never reached
the provider and are not logged; the breaker state tells that story.

Never stored: paths, query strings, headers, bodies, secrets. Only the host.
Rows are written in their own short transaction, never the caller's, and a failed
write is logged and swallowed: losing a log row must not fail a call that worked.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from clinicbridge.core.ids import new_id
from clinicbridge.db.engine import Database
from clinicbridge.http.models import HttpCall

log = logging.getLogger("clinicbridge.http")
RETENTION = timedelta(days=30)


@dataclass
class CallRecord:
    """One call as it goes: the client fills it in attempt by attempt."""

    tenant_id: str | None
    integration: str
    operation: str
    method: str
    host: str = "?"
    attempts: int = 0
    seconds_on_wire: float = 0.0
    status: int | None = None
    success: bool = False
    error_class: str | None = None


def record_call(db: Database, call: CallRecord, at: datetime) -> None:
    try:
        with db.write() as session:
            session.execute(
                sa.insert(HttpCall).values(
                    id=new_id("hc", int(at.timestamp() * 1000)),
                    tenant_id=call.tenant_id,
                    integration=call.integration[:64],
                    operation=call.operation[:128],
                    method=call.method[:10],
                    host=call.host[:255],
                    status=call.status,
                    duration_ms=round(call.seconds_on_wire * 1000.0, 3),
                    success=call.success,
                    error_class=call.error_class[:128] if call.error_class else None,
                    attempt=call.attempts,
                    created_at=at,
                )
            )
    except SQLAlchemyError as exc:
        log.warning(
            "call log write failed",
            extra={"fields": {"integration": call.integration, "error_class": type(exc).__name__}},
        )


def purge_expired(db: Database, now: datetime, *, keep: timedelta = RETENTION) -> int:
    """Delete call log rows older than ``keep``; returns how many."""
    with db.write() as session:
        result = session.execute(sa.delete(HttpCall).where(HttpCall.created_at < now - keep))
        return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True)
class CallSummary:
    """Health of one (clinic, integration) over a window, from the call log."""

    calls: int
    failures: int
    error_rate: float | None  # None when there were no calls
    p95_ms: float | None
    last_success_at: datetime | None  # over the whole retained log, not just the window
    last_failure_at: datetime | None


def summarize(
    db: Database,
    tenant_id: str | None,
    integration: str,
    *,
    now: datetime,
    window: timedelta = timedelta(hours=24),
) -> CallSummary:
    owner = HttpCall.tenant_id.is_(None) if tenant_id is None else HttpCall.tenant_id == tenant_id
    mine = sa.and_(owner, HttpCall.integration == integration)
    recent = sa.and_(mine, HttpCall.created_at >= now - window, HttpCall.created_at <= now)
    with db.read() as session:
        calls, failures = session.execute(
            sa.select(sa.func.count(), sa.func.count().filter(sa.not_(HttpCall.success))).where(
                recent
            )
        ).one()
        p95: float | None = None
        if calls:
            # Nearest-rank percentile, in SQL on both databases: no rows are loaded.
            rank = math.ceil(0.95 * calls) - 1
            p95 = session.execute(
                sa.select(HttpCall.duration_ms)
                .where(recent)
                .order_by(HttpCall.duration_ms)
                .offset(rank)
                .limit(1)
            ).scalar_one()
        last_ok, last_bad = session.execute(
            sa.select(
                sa.func.max(HttpCall.created_at).filter(HttpCall.success),
                sa.func.max(HttpCall.created_at).filter(sa.not_(HttpCall.success)),
            ).where(mine)
        ).one()
    return CallSummary(
        calls=int(calls),
        failures=int(failures),
        error_rate=(int(failures) / int(calls)) if calls else None,
        p95_ms=p95,
        last_success_at=last_ok,
        last_failure_at=last_bad,
    )
