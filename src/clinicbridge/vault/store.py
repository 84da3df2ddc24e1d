"""Every query the vault runs against ``vault_data_keys``, in one place."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from clinicbridge.core.models import Tenant
from clinicbridge.vault.models import DataKey


class StoredKey(NamedTuple):
    tenant_id: str
    version: int
    wrapped_key: bytes
    master_version: int


_COLUMNS = (DataKey.tenant_id, DataKey.version, DataKey.wrapped_key, DataKey.master_version)


def _stored(row: sa.Row[str, int, bytes, int] | None) -> StoredKey | None:
    return None if row is None else StoredKey(row[0], row[1], bytes(row[2]), row[3])


# -- data keys of one clinic -------------------------------------------------


def latest_key(session: Session, tenant_id: str) -> StoredKey | None:
    """The clinic's newest data key: the one new ciphertexts use."""
    query = (
        sa.select(*_COLUMNS)
        .where(DataKey.tenant_id == tenant_id)
        .order_by(DataKey.version.desc())
        .limit(1)
    )
    return _stored(session.execute(query).first())


def get_key(session: Session, tenant_id: str, version: int) -> StoredKey | None:
    query = sa.select(*_COLUMNS).where(DataKey.tenant_id == tenant_id, DataKey.version == version)
    return _stored(session.execute(query).first())


def tenant_exists(session: Session, tenant_id: str) -> bool:
    query = sa.select(sa.literal(1)).where(Tenant.id == tenant_id)
    return session.execute(query).first() is not None


def insert_key_if_absent(
    session: Session,
    tenant_id: str,
    version: int,
    wrapped_key: bytes,
    master_version: int,
    now: datetime,
) -> bool:
    """Insert a data key unless the clinic already has that version; True if inserted.

    ON CONFLICT DO NOTHING instead of catching IntegrityError: on PostgreSQL a
    failed INSERT would abort the caller's transaction. A concurrent inserter
    makes PostgreSQL wait for its commit, then skip; SQLite writers queue.
    """
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(DataKey)
        .values(
            tenant_id=tenant_id,
            version=version,
            wrapped_key=wrapped_key,
            master_version=master_version,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["tenant_id", "version"])
    )
    result = session.execute(statement)
    return bool(result.rowcount)  # type: ignore[attr-defined]


# -- master key rotation -----------------------------------------------------


def keys_to_rewrap(
    session: Session, active_master: int, after: tuple[str, int] | None, limit: int
) -> list[StoredKey]:
    """Data keys not wrapped by ``active_master``, in key order after ``after``.

    Rows another rotation holds are skipped on PostgreSQL (it re-wraps them).
    """
    query = sa.select(*_COLUMNS).where(DataKey.master_version != active_master)
    if after is not None:
        tenant_id, version = after
        query = query.where(
            sa.or_(
                DataKey.tenant_id > tenant_id,
                sa.and_(DataKey.tenant_id == tenant_id, DataKey.version > version),
            )
        )
    query = (
        query.order_by(DataKey.tenant_id, DataKey.version)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [StoredKey(r[0], r[1], bytes(r[2]), r[3]) for r in session.execute(query)]


def set_wrapped(
    session: Session, key: StoredKey, wrapped_key: bytes, master_version: int, now: datetime
) -> bool:
    """Store a re-wrapped key unless someone changed the row meanwhile; True if stored."""
    statement = (
        sa.update(DataKey)
        .where(
            DataKey.tenant_id == key.tenant_id,
            DataKey.version == key.version,
            DataKey.master_version == key.master_version,
        )
        .values(wrapped_key=wrapped_key, master_version=master_version, rewrapped_at=now)
    )
    return bool(session.execute(statement).rowcount)  # type: ignore[attr-defined]


# -- status --------------------------------------------------------------------


def count_by_master_version(session: Session) -> dict[int, int]:
    query = sa.select(DataKey.master_version, sa.func.count()).group_by(DataKey.master_version)
    return {int(version): int(count) for version, count in session.execute(query)}


def count_tenants_with_keys(session: Session) -> int:
    query = sa.select(sa.func.count(sa.distinct(DataKey.tenant_id)))
    return int(session.execute(query).scalar_one())
