"""Chain heads: the locked ``audit_chain_heads`` row of each chain a transaction appends to.

Each tenant's chain has one row (last seq and hash) whose lock serialises appends,
so no link is lost or forked: PostgreSQL locks the row (``SELECT ... FOR UPDATE``,
after ``INSERT ... ON CONFLICT DO NOTHING`` for a new chain); SQLite write
transactions already hold the database lock from ``BEGIN IMMEDIATE``. The unique
``(tenant_id, seq)`` stops any writer that skips the lock.

The lock lasts until the transaction ends, so the head is kept in ``session.info``
and its row is written once, just before commit. When a savepoint ends the cached
head is dropped (a rollback may have undone our appends) and re-read from the
last event. A transaction that appends to several chains should do so in one
order (e.g. by tenant id): a head is locked at the first append to its chain.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, SessionTransaction

from clinicbridge.audit.chain import GENESIS
from clinicbridge.audit.models import AuditChainHead, AuditEvent

_EVENTS = cast(sa.Table, AuditEvent.__table__)
_HEADS = cast(sa.Table, AuditChainHead.__table__)
_STATE_KEY = "clinicbridge.audit.chains"
_UPDATE_HEAD = (
    sa.update(_HEADS)
    .where(_HEADS.c.tenant_id == sa.bindparam("b_tenant_id"))
    .values(seq=sa.bindparam("b_seq"), hash=sa.bindparam("b_hash"))
)
_SELECT_TAIL = (
    sa.select(_EVENTS.c.seq, _EVENTS.c.hash)
    .where(_EVENTS.c.tenant_id == sa.bindparam("tenant_id"))
    .order_by(_EVENTS.c.seq.desc())
    .limit(1)
)
_SELECT_HEAD = (
    sa.select(_HEADS.c.seq, _HEADS.c.hash)
    .where(_HEADS.c.tenant_id == sa.bindparam("tenant_id"))
    .with_for_update()
)


class _ChainState:
    """What this transaction knows about the chains it appends to."""

    def __init__(self) -> None:
        self.heads: dict[str, list[Any]] = {}  # tenant -> [seq, hash], our appends included
        self.moved: set[str] = set()  # tenants whose head row must be written at commit


def _state(session: Session) -> _ChainState:
    state: _ChainState | None = session.info.get(_STATE_KEY)
    if state is None:
        state = session.info[_STATE_KEY] = _ChainState()
        if not event.contains(session, "before_commit", _write_heads):
            event.listen(session, "before_commit", _write_heads)
            event.listen(session, "after_transaction_end", _transaction_ended)
    return state


def locked_head(session: Session, conn: sa.Connection, tenant_id: str) -> list[Any]:
    """``[seq, hash]`` of the chain's last event, the head row locked until commit.

    The caller advances the list in place as it appends, then calls ``moved``.
    """
    state = _state(session)
    head = state.heads.get(tenant_id)
    if head is not None:
        return head
    params = {"tenant_id": tenant_id}
    row = conn.execute(_SELECT_HEAD, params).first()
    if row is None:  # first event of this chain: create its head, then lock it
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        conn.execute(
            insert(_HEADS)
            .values(tenant_id=tenant_id, seq=0, hash=GENESIS)
            .on_conflict_do_nothing(index_elements=["tenant_id"])
        )
        row = conn.execute(_SELECT_HEAD, params).one()
    head = [row.seq, row.hash]
    if tenant_id in state.moved:  # our own appends are ahead of the (unwritten) head row
        head = _tail(conn, tenant_id) or head
    state.heads[tenant_id] = head
    return head


def moved(session: Session, tenant_ids: Iterable[str]) -> None:
    """These chains got events: their head rows are written at commit."""
    _state(session).moved.update(tenant_ids)


def forget(session: Session, tenant_ids: Iterable[str]) -> None:
    """An insert failed part-way: re-read these chains from their last event next time."""
    state = _state(session)
    for tenant_id in tenant_ids:
        state.heads.pop(tenant_id, None)
        state.moved.add(tenant_id)


def _tail(conn: sa.Connection, tenant_id: str) -> list[Any] | None:
    row = conn.execute(_SELECT_TAIL, {"tenant_id": tenant_id}).first()
    return None if row is None else [row.seq, row.hash]


def _write_heads(session: Session) -> None:
    """before_commit: the head rows catch up with what this transaction appended."""
    state: _ChainState | None = session.info.get(_STATE_KEY)
    if state is None or not state.moved:
        return
    conn = session.connection()
    for tenant_id in sorted(state.moved):
        head = state.heads.get(tenant_id) or _tail(conn, tenant_id)
        if head is not None:
            params = {"b_tenant_id": tenant_id, "b_seq": head[0], "b_hash": head[1]}
            conn.execute(_UPDATE_HEAD, params)


def _transaction_ended(session: Session, transaction: SessionTransaction) -> None:
    state: _ChainState | None = session.info.get(_STATE_KEY)
    if state is None:
        return
    if transaction.parent is None:
        session.info.pop(_STATE_KEY, None)
    else:  # a savepoint ended; if it rolled back, our appends in it are gone
        state.heads.clear()
