"""Prove each tenant's chain, or name the first event that was changed, deleted or inserted.

Rows are streamed in seq order (on PostgreSQL one query read in chunks, or a
server-side cursor with libpq < 17; ``fetchmany`` batches on SQLite); each hash
is recomputed and each link checked, then the last event is compared with
``audit_chain_heads``, so a truncated tail or an event appended behind the log's
back is caught too. Heads and events are read in one snapshot, so appends
running meanwhile are not mistaken for tampering.

Speed: time and diff are read as the text the database holds, which is already
canonical for every event ``append`` wrote, and hashed as is; only a row whose
hash does not match is parsed and hashed again (a database migration may store
the same values differently). Rows come straight from the driver's cursor:
SQLAlchemy's per-row processing would cost more than the hashing.

What verification cannot see: someone able to write the database who rewrites a
whole chain *and* its head. Keep a copy of the heads elsewhere (the SIEM export,
or the output of ``clinicbridge audit verify``) and compare.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa

from clinicbridge.audit.breaks import (
    ChainBreak,
    broken_link,
    canonical_row,
    gap,
    mismatch,
    tail,
)
from clinicbridge.audit.chain import FIELDS, GENESIS, NULL, SEPARATOR, VERSION_TAG, encode
from clinicbridge.audit.models import AuditChainHead, AuditEvent

BATCH_SIZE = 5_000

_EVENTS = cast(sa.Table, AuditEvent.__table__)
_HEADS = cast(sa.Table, AuditChainHead.__table__)
_sha256 = hashlib.sha256
_join, _TAG, _NULL = SEPARATOR.join, VERSION_TAG, NULL


@dataclass(frozen=True)
class ChainReport:
    tenant_id: str
    verified: int  # events proven good (before the break, if any)
    head_seq: int
    head_hash: str
    error: ChainBreak | None = None
    reparsed: int = 0  # events stored in another form than the one appended

    @property
    def ok(self) -> bool:
        return self.error is None


def chain_tenants(conn: sa.Connection) -> list[str]:
    """Every tenant with a chain head or an event ("" is the platform chain)."""
    heads = sa.select(_HEADS.c.tenant_id)
    events = sa.select(_EVENTS.c.tenant_id).distinct()
    return sorted(set(conn.scalars(heads)) | set(conn.scalars(events)))


def verify_chains(
    engine: sa.Engine, tenant_id: str | None = None, *, batch_size: int = BATCH_SIZE
) -> Iterator[ChainReport]:
    """Verify one tenant's chain, or every chain, in one consistent snapshot."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":  # before begin(): it applies to it
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            heads = {r.tenant_id: (r.seq, r.hash) for r in conn.execute(sa.select(_HEADS))}
            tenants = [tenant_id] if tenant_id is not None else chain_tenants(conn)
            for tenant in tenants:
                yield verify_chain(conn, tenant, heads.get(tenant), batch_size=batch_size)


def verify_chain(
    conn: sa.Connection,
    tenant_id: str,
    head: tuple[int, str] | None,
    *,
    batch_size: int = BATCH_SIZE,
) -> ChainReport:
    """Walk one chain; ``head`` is its ``audit_chain_heads`` row (None if missing)."""
    limit = head[0] if head is not None else None
    expected, prev, before_prev, prev_id, reparsed = 1, GENESIS, "", "", 0

    def broken(found: ChainBreak) -> ChainReport:
        return _report(tenant_id, head, found.seq - 1, found, reparsed)

    with closing(chain_rows(conn, tenant_id, batch_size)) as rows:
        for row in rows:
            eid, tid, seq, at, atype, aid, act, rtype, rid, req, ip, out, phi, diff, link, h = row
            if seq != expected:
                return broken(gap(expected, seq, eid))
            if limit is not None and seq > limit:
                detail = f"event {eid} (seq {seq}) was inserted past the chain head (seq {limit})"
                return broken(ChainBreak("inserted", seq, eid, detail))
            # chain.encode, inlined: this runs once for every event of the log.
            message = _join((_TAG, eid, tid, str(seq), at, atype, aid, act, rtype,
                _NULL if rid is None else "=" + rid, _NULL if req is None else "=" + req,
                _NULL if ip is None else "=" + ip, out, "1" if phi else "0",
                "null" if diff is None else diff, link))  # fmt: skip
            if _sha256(message.encode()).hexdigest() != h:
                canon = canonical_row(row)  # stored in another form, or tampered
                if canon is None or _sha256(encode(*canon)).hexdigest() != h:
                    fields = (*row[:13], "null" if diff is None else diff, link)
                    return broken(mismatch(canon or fields, h, prev_id))
                reparsed += 1
            if link != prev:
                return broken(broken_link(seq, eid, link, before_prev, prev_id))
            before_prev, prev, prev_id = prev, h, eid
            expected += 1
    last = expected - 1
    return _report(tenant_id, head, last, tail(head, last, prev, prev_id), reparsed)


def _chain_query(dialect: str) -> sa.Select[Any]:
    """A chain's events in seq order, with the time and the diff as the text stored."""
    c = _EVENTS.c
    if dialect == "postgresql":
        utc = sa.func.timezone("UTC", c.occurred_at)
        at: Any = sa.func.to_char(utc, "YYYY-MM-DD HH24:MI:SS.US")
    else:  # SQLAlchemy stores UTC as 'YYYY-MM-DD HH:MM:SS.ffffff' on SQLite
        at = c.occurred_at
    raw = {"occurred_at": at, "diff": sa.cast(c.diff, sa.Text())}
    columns = [raw.get(name, c[name]) for name in FIELDS]
    return (
        sa.select(*columns, c.hash).where(c.tenant_id == sa.bindparam("tenant_id")).order_by(c.seq)
    )


def chain_rows(
    conn: sa.Connection, tenant_id: str, batch_size: int
) -> Generator[Sequence[Any], None, None]:
    """The chain's rows straight from the driver, ``batch_size`` at a time, in ``conn``'s
    transaction: the ``FIELDS`` (time and diff as stored text), then the stored hash.

    Close the iterator when leaving early: that frees the connection for the next query.
    """
    compiled = _chain_query(conn.dialect.name).compile(dialect=conn.dialect)
    params: Any = compiled.construct_params({"tenant_id": tenant_id})
    if compiled.positiontup is not None:
        params = tuple(params[name] for name in compiled.positiontup)
    sql, driver = str(compiled), cast(Any, conn.connection.driver_connection)
    postgres = conn.dialect.name == "postgresql"
    if postgres and _chunked_rows():  # one query streamed in chunks: no FETCH round trips
        cursor: Any = driver.cursor()
        with closing(cursor):
            yield from cursor.stream(sql, params, size=batch_size)
        return
    # A server-side cursor on PostgreSQL; SQLite's cursors fetch lazily anyway.
    cursor = driver.cursor(name="cb_audit_verify") if postgres else driver.cursor()
    with closing(cursor):
        cursor.execute(sql, params)
        while batch := cursor.fetchmany(batch_size):
            yield from batch


def _chunked_rows() -> bool:
    import psycopg

    return bool(psycopg.pq.version() >= 170_000)  # libpq 17 added chunked rows mode


def _report(
    tenant_id: str,
    head: tuple[int, str] | None,
    verified: int,
    error: ChainBreak | None,
    reparsed: int = 0,
) -> ChainReport:
    seq, digest = head if head is not None else (0, GENESIS)
    return ChainReport(tenant_id, max(verified, 0), seq, digest, error, reparsed)
