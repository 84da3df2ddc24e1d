"""Imported busy blocks: what a sync round changes in ``busy_blocks``, and writing it.

A connection's blocks have ``source`` = the connection id, ``external_id`` = the outside
instance key (unique per provider and source, so a repeated or replayed round never
duplicates) and ``external_group`` = its series or resource. ``plan`` compares what the
round learnt with the blocks stored and yields inserts, updates and deletes; ``write``
applies them in batches of at most 500 rows, each in its own short transaction (the
schedule-version triggers fire per row, so the slot cache follows every batch); a round
that small is a single transaction.

No outside event text is stored: a block's reason says only which calendar it came from.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.calendars.events import Changes, Window
from clinicbridge.calendars.models import CalendarConnection
from clinicbridge.core.ids import new_id
from clinicbridge.db.engine import Database
from clinicbridge.scheduling.models import BusyBlock

BATCH = 500
_BLOCKS = cast(sa.Table, BusyBlock.__table__)


@dataclass(frozen=True)
class Stored:
    id: str
    start: datetime
    end: datetime
    group: str | None


Target = dict[str, tuple[datetime, datetime, str]]  # key -> (start, end, group)


@dataclass
class Plan:
    inserts: list[tuple[str, datetime, datetime, str]] = field(default_factory=list)
    updates: list[tuple[str, datetime, datetime, str]] = field(default_factory=list)  # by id
    deletes: list[str] = field(default_factory=list)  # block ids

    @property
    def size(self) -> int:
        return len(self.inserts) + len(self.updates) + len(self.deletes)


def _chunks(items: list[Any], size: int = BATCH) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def stored(session: Session, connection_id: str, changes: Changes) -> dict[str, Stored]:
    """The blocks the round may touch: all of them after a full round, else those of the
    keys and groups it names."""
    b = _BLOCKS.c
    base = sa.select(b.external_id, b.id, b.starts_at, b.ends_at, b.external_group).where(
        b.connection_id == connection_id
    )
    rows: list[Any] = []
    if changes.full:
        rows = list(session.execute(base))
    else:
        keys = sorted({*changes.removed, *(i.key for i in changes.instances)})
        groups = sorted({*changes.removed_groups, *changes.replaced_groups})
        for chunk in _chunks(keys):
            rows.extend(session.execute(base.where(b.external_id.in_(chunk))))
        for chunk in _chunks(groups):
            rows.extend(session.execute(base.where(b.external_group.in_(chunk))))
    return {r.external_id: Stored(r.id, r.starts_at, r.ends_at, r.external_group) for r in rows}


def plan(existing: dict[str, Stored], changes: Changes, window: Window) -> Plan:
    target: Target = {}
    if not changes.full:
        gone = {*changes.removed_groups, *changes.replaced_groups}
        removed = set(changes.removed)
        target = {
            k: (s.start, s.end, s.group or k)
            for k, s in existing.items()
            if k not in removed and s.group not in gone
        }
    for instance in changes.instances:
        span = instance.span(window)
        if span is None:
            target.pop(instance.key, None)
        else:
            target[instance.key] = (span[0], span[1], instance.group)
    result = Plan()
    for k, s in existing.items():
        wanted = target.get(k)
        if wanted is None:
            result.deletes.append(s.id)
        elif (wanted[0], wanted[1]) != (s.start, s.end) or wanted[2] != s.group:
            result.updates.append((s.id, *wanted))
    for k, (start, end, group) in target.items():
        if k not in existing:
            result.inserts.append((k, start, end, group))
    return result


def write(
    db: Database,
    connection: CalendarConnection,
    result: Plan,
    now: datetime,
    *,
    reason: str,
) -> int:
    """Apply ``result`` in batches; stops (returns what was written) if the connection
    was deleted or its import switched off meanwhile. Returns the number of rows changed.

    Each batch locks the connection row first: switching import off (which locks it too
    and deletes the blocks) thus comes wholly before or after a batch, never between."""
    done = 0
    steps: list[tuple[str, list[Any]]] = [
        *(("delete", c) for c in _chunks(result.deletes)),
        *(("update", c) for c in _chunks(result.updates)),
        *(("insert", c) for c in _chunks(result.inserts)),
    ]
    # Consecutive steps share a transaction up to BATCH rows: a small round (the usual
    # incremental one) is one transaction, so a replaced recurring series never shows
    # its slots free between the deletes and the inserts.
    transactions: list[list[tuple[str, list[Any]]]] = []
    for step in steps:
        if transactions and sum(len(c) for _, c in transactions[-1]) + len(step[1]) <= BATCH:
            transactions[-1].append(step)
        else:
            transactions.append([step])
    for group in transactions:
        with db.write() as session:
            current = session.get(
                CalendarConnection, connection.id, with_for_update=True, populate_existing=True
            )
            if current is None or not current.import_busy:
                return done
            for what, chunk in group:
                _apply(session, connection, what, chunk, now, reason)
        done += sum(len(chunk) for _, chunk in group)
    return done


def _apply(
    session: Session,
    connection: CalendarConnection,
    what: str,
    chunk: list[Any],
    now: datetime,
    reason: str,
) -> None:
    b = _BLOCKS.c
    conn = session.connection()
    if what == "delete":
        conn.execute(sa.delete(_BLOCKS).where(b.id.in_(chunk), b.connection_id == connection.id))
    elif what == "update":
        conn.execute(
            sa.update(_BLOCKS)
            .where(b.id == sa.bindparam("block_id"))
            .values(
                starts_at=sa.bindparam("new_start"),
                ends_at=sa.bindparam("new_end"),
                external_group=sa.bindparam("new_group"),
            ),
            [{"block_id": i, "new_start": s, "new_end": e, "new_group": g} for i, s, e, g in chunk],
        )
    else:
        conn.execute(
            sa.insert(_BLOCKS),
            [
                {
                    "id": new_id("bsy"),
                    "tenant_id": connection.tenant_id,
                    "provider_id": connection.provider_id,
                    "starts_at": start,
                    "ends_at": end,
                    "source": connection.id,
                    "external_id": k,
                    "external_group": group,
                    "connection_id": connection.id,
                    "reason": reason,
                    "created_at": now,
                }
                for k, start, end, group in chunk
            ],
        )


def delete_all(session: Session, connection_id: str) -> int:
    """Remove every block of a connection (its import was switched off), in the caller's
    transaction; returns how many went. The triggers fire per row, as for a sync round."""
    deleted = session.connection().execute(
        sa.delete(_BLOCKS).where(_BLOCKS.c.connection_id == connection_id)
    )
    return int(deleted.rowcount or 0)


def count(session: Session, connection_id: str) -> int:
    return int(
        session.scalar(sa.select(sa.func.count()).where(_BLOCKS.c.connection_id == connection_id))
        or 0
    )
