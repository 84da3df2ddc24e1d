"""Appending audit events, in the caller's transaction (see ``heads`` for the locking).

Services call ``record(session, ctx, ...)``; code without a Ctx (CLI, scheduler)
calls ``record_system``; bulk work (an import that creates many records in one
transaction) builds events with ``event_for`` and writes them with one
``append_many``, a single multi-row INSERT.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit import heads
from clinicbridge.audit.chain import CONTROL_CHARACTER, canonical_json, event_hash
from clinicbridge.audit.diff import jsonable, scrub
from clinicbridge.audit.models import AuditEvent
from clinicbridge.core.context import Ctx
from clinicbridge.core.ids import new_id

PLATFORM = ""  # tenant_id of events that belong to no clinic
ACTOR_TYPES = frozenset({"user", "api_key", "system", "integration"})
OUTCOMES = frozenset({"success", "failure", "denied"})

_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
_INSERT_EVENT = cast(sa.Table, AuditEvent.__table__).insert()
_LIMITS = (  # column, longest value, must look like "user.update"
    ("action", 64, True),
    ("resource_type", 64, True),
    ("tenant_id", 32, False),
    ("actor_id", 64, False),
    ("resource_id", 64, False),
    ("request_id", 128, False),
    ("ip", 64, False),
)


@dataclass(frozen=True)
class NewEvent:
    """An event to append; ``seq``, ``prev_hash``, ``id`` and ``hash`` come from the chain."""

    tenant_id: str
    actor_type: str
    actor_id: str
    action: str
    resource_type: str
    occurred_at: datetime
    resource_id: str | None = None
    request_id: str | None = None
    ip: str | None = None
    outcome: str = "success"
    phi: bool = False
    diff: dict[str, Any] | None = None


@dataclass(frozen=True)
class Appended:
    """Where an event landed in its tenant's chain."""

    id: str
    tenant_id: str
    seq: int
    hash: str


def event_for(
    ctx: Ctx,
    action: str,
    resource_type: str,
    resource_id: str | None = None,
    *,
    outcome: str = "success",
    phi: bool = False,
    diff: dict[str, Any] | None = None,
) -> NewEvent:
    """An event by the principal, for the clinic, in the request and at the time of ``ctx``."""
    return NewEvent(
        tenant_id=ctx.tenant_id,
        actor_type=ctx.actor_type,
        actor_id=ctx.actor_id,
        action=action,
        resource_type=resource_type,
        occurred_at=ctx.now,
        resource_id=resource_id,
        request_id=ctx.request_id,
        ip=ctx.ip,
        outcome=outcome,
        phi=phi,
        diff=diff,
    )


def record(
    session: Session,
    ctx: Ctx,
    action: str,
    resource_type: str,
    resource_id: str | None = None,
    *,
    outcome: str = "success",
    phi: bool = False,
    diff: dict[str, Any] | None = None,
) -> Appended:
    """Append one event for the principal, clinic, request and time of ``ctx``."""
    event = event_for(ctx, action, resource_type, resource_id, outcome=outcome, phi=phi, diff=diff)
    return append_many(session, [event])[0]


def record_system(
    session: Session,
    tenant_id: str,
    action: str,
    resource_type: str,
    resource_id: str | None = None,
    *,
    now: datetime,
    actor_id: str = "system",
    outcome: str = "success",
    phi: bool = False,
    diff: dict[str, Any] | None = None,
) -> Appended:
    """Append an event done by ClinicBridge itself (CLI, scheduler): callers with no Ctx."""
    event = NewEvent(
        tenant_id=tenant_id,
        actor_type="system",
        actor_id=actor_id,
        action=action,
        resource_type=resource_type,
        occurred_at=now,
        resource_id=resource_id,
        outcome=outcome,
        phi=phi,
        diff=diff,
    )
    return append_many(session, [event])[0]


def append(
    session: Session,
    *,
    tenant_id: str,
    actor_type: str,
    actor_id: str,
    action: str,
    resource_type: str,
    occurred_at: datetime,
    resource_id: str | None = None,
    request_id: str | None = None,
    ip: str | None = None,
    outcome: str = "success",
    phi: bool = False,
    diff: dict[str, Any] | None = None,
) -> Appended:
    """Append one event to ``tenant_id``'s chain (``PLATFORM`` for platform events)."""
    event = NewEvent(
        tenant_id=tenant_id,
        actor_type=actor_type,
        actor_id=actor_id,
        action=action,
        resource_type=resource_type,
        occurred_at=occurred_at,
        resource_id=resource_id,
        request_id=request_id,
        ip=ip,
        outcome=outcome,
        phi=phi,
        diff=diff,
    )
    return append_many(session, [event])[0]


def append_many(session: Session, events: Iterable[NewEvent]) -> list[Appended]:
    """Append events in order, with one INSERT; each chain advances by one per event."""
    checked = [_checked(event) for event in events]
    if not checked:
        return []
    conn = session.connection()
    rows, done, touched = [], [], set()
    for event in checked:
        head = heads.locked_head(session, conn, event.tenant_id)
        touched.add(event.tenant_id)
        row = dict(vars(event)) | {
            "id": new_id("aud"),
            "seq": head[0] + 1,
            "prev_hash": head[1],
        }
        row["hash"] = event_hash(
            row["id"],
            row["tenant_id"],
            row["seq"],
            row["occurred_at"],
            row["actor_type"],
            row["actor_id"],
            row["action"],
            row["resource_type"],
            row["resource_id"],
            row["request_id"],
            row["ip"],
            row["outcome"],
            row["phi"],
            row["diff"],
            row["prev_hash"],
        )
        head[0], head[1] = row["seq"], row["hash"]  # the next event links to this one
        rows.append(row)
        done.append(Appended(row["id"], row["tenant_id"], row["seq"], row["hash"]))
    try:
        conn.execute(_INSERT_EVENT, rows if len(rows) > 1 else rows[0])
    except BaseException:
        heads.forget(session, touched)
        raise
    heads.moved(session, touched)
    return done


def _checked(event: NewEvent) -> NewEvent:
    """Refuse malformed events (programming errors) before anything is written."""
    if event.actor_type not in ACTOR_TYPES:
        raise ValueError(f"invalid audit actor_type {event.actor_type!r}")
    if event.outcome not in OUTCOMES:
        raise ValueError(f"invalid audit outcome {event.outcome!r}")
    if event.occurred_at.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    for name, limit, pattern in _LIMITS:
        value = getattr(event, name)
        bad = value is not None and (
            len(value) > limit
            or CONTROL_CHARACTER.search(value)
            or (pattern and not _NAME.match(value))
        )
        if bad:
            raise ValueError(f"invalid audit {name}")
    if not event.diff:
        return dataclasses.replace(event, diff=None)
    # Stored with sorted keys: SQLAlchemy then writes exactly the canonical JSON text.
    diff = json.loads(canonical_json(scrub(jsonable(event.diff))))
    return dataclasses.replace(event, diff=diff)
