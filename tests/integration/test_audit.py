"""The audit chain on a real database: links, transactions, triggers, tampering, concurrency."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from clinicbridge.audit import (
    GENESIS,
    Appended,
    ChainReport,
    NewEvent,
    append,
    append_many,
    event_hash,
    verify_chains,
)
from clinicbridge.audit.chain import FIELDS
from clinicbridge.audit.models import AuditChainHead, AuditEvent
from clinicbridge.core.ids import new_id
from clinicbridge.db.engine import Database
from tests.audit_tamper import renumber_from, tamper
from tests.conftest import ON_POSTGRES

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
T = "ten_01JD3Q7X8Y9Z0A1B2C3D4E5F6G"


def _add(session: Any, tenant: str = T, i: int = 0) -> Appended:
    return append(
        session,
        tenant_id=tenant,
        actor_type="user",
        actor_id="usr_1",
        action="user.update",
        resource_type="user",
        resource_id=f"usr_{i}",
        occurred_at=NOW,
        request_id=f"req_{i}",
        ip="127.0.0.1",
        diff={"role": {"old": "clinician", "new": "front_desk"}} if i % 2 else None,
    )


def _chain(db: Database, count: int, tenant: str = T) -> list[Appended]:
    with db.write() as session:
        return [_add(session, tenant, i) for i in range(count)]


def _rows(db: Database, tenant: str = T) -> list[Any]:
    with db.read() as session:
        stmt = sa.select(AuditEvent).where(AuditEvent.tenant_id == tenant).order_by(AuditEvent.seq)
        return list(session.scalars(stmt))


def _head(db: Database, tenant: str = T) -> tuple[int, str] | None:
    with db.read() as session:
        head = session.get(AuditChainHead, tenant)
        return None if head is None else (head.seq, head.hash)


def _verify(db: Database, tenant: str = T) -> ChainReport:
    (report,) = verify_chains(db.engine, tenant)
    return report


def test_events_link_into_a_chain_per_tenant(db: Database) -> None:
    first = _chain(db, 3)
    other = _chain(db, 2, tenant="ten_other")
    more = _chain(db, 2)
    rows = _rows(db)
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    assert [r.id for r in rows] == [a.id for a in first + more]
    assert rows[0].prev_hash == GENESIS
    assert all(rows[i].prev_hash == rows[i - 1].hash for i in range(1, 5))
    assert all(r.hash == event_hash(*(getattr(r, f) for f in FIELDS)) for r in rows)
    assert [r.seq for r in _rows(db, "ten_other")] == [a.seq for a in other] == [1, 2]
    assert _head(db) == (5, rows[-1].hash)
    report = _verify(db)
    assert report.ok and report.verified == 5 and report.reparsed == 0
    assert {r.tenant_id: r.verified for r in verify_chains(db.engine)} == {T: 5, "ten_other": 2}


def test_a_rolled_back_transaction_leaves_no_gap(db: Database) -> None:
    _chain(db, 2)
    with pytest.raises(RuntimeError), db.write() as session:
        _add(session)
        raise RuntimeError("the business change failed")
    assert _head(db) == (2, _rows(db)[-1].hash)
    assert _chain(db, 1)[0].seq == 3
    assert _verify(db).ok


def test_savepoint_rollback_is_forgotten(db: Database) -> None:
    with db.write() as session:
        _add(session, i=1)
        nested = session.begin_nested()
        _add(session, i=2)
        nested.rollback()
        _add(session, i=3)
        nested = session.begin_nested()  # the first append of a chain inside a savepoint
        _add(session, tenant="ten_other")
        nested.rollback()
        with session.begin_nested():
            _add(session, i=4)
    assert [r.resource_id for r in _rows(db)] == ["usr_1", "usr_3", "usr_4"]
    assert _head(db) == (3, _rows(db)[-1].hash)
    assert _head(db, "ten_other") is None
    assert _verify(db).ok and _verify(db, "ten_other").verified == 0


def _new(tenant: str = T, action: str = "patient.create") -> NewEvent:
    return NewEvent(tenant, "integration", "int_ehr", action, "patient", NOW, resource_id="pat_1")


def test_append_many_advances_each_chain_in_order(db: Database) -> None:
    _chain(db, 1)
    events = [_new(T if i % 3 else "ten_other") for i in range(9)]
    with db.write() as session:
        done = append_many(session, events)
    assert [(a.tenant_id, a.seq) for a in done[:4]] == [
        ("ten_other", 1),
        (T, 2),
        (T, 3),
        ("ten_other", 2),
    ]
    assert [r.id for r in _rows(db)][1:] == [a.id for a in done if a.tenant_id == T]
    assert _head(db) == (7, done[-1].hash) and _head(db, "ten_other") == (3, done[-3].hash)
    assert all(r.ok for r in verify_chains(db.engine))


@contextmanager
def _inserts_of_test_fail_fail(db: Database) -> Iterator[None]:
    """A fault: the database refuses to insert events whose action is test.fail."""
    with db.engine.begin() as conn:
        if ON_POSTGRES:
            conn.exec_driver_sql(
                "CREATE FUNCTION test_fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.action = 'test.fail' THEN RAISE EXCEPTION 'boom'; END IF; "
                "RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER test_fail BEFORE INSERT ON audit_events "
                "FOR EACH ROW EXECUTE FUNCTION test_fail()"
            )
        else:
            conn.exec_driver_sql(
                "CREATE TRIGGER test_fail BEFORE INSERT ON audit_events "
                "WHEN NEW.action = 'test.fail' BEGIN SELECT RAISE(ABORT, 'boom'); END"
            )
    yield


def test_a_failed_insert_does_not_leave_a_gap(db: Database) -> None:
    _chain(db, 2)
    with _inserts_of_test_fail_fail(db), db.write() as session:
        _add(session)
        with pytest.raises(sa.exc.DBAPIError, match="boom"), session.begin_nested():
            append_many(session, [_new(), _new(action="test.fail")])
        if not ON_POSTGRES:  # SQLite keeps the rows before the failed one: so must the chain
            with pytest.raises(sa.exc.DBAPIError, match="boom"):
                append_many(session, [_new(), _new(action="test.fail"), _new()])
        _add(session)
    rows = _rows(db)
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    assert len(rows) == (4 if ON_POSTGRES else 5)
    assert _head(db) == (len(rows), rows[-1].hash)
    assert _verify(db).ok


def test_triggers_refuse_update_and_delete(db: Database) -> None:
    _chain(db, 2)
    statements = [
        "UPDATE audit_events SET action = 'user.read'",
        "DELETE FROM audit_events WHERE seq = 2",
    ]
    if ON_POSTGRES:
        statements.append("TRUNCATE audit_events")
    for statement in statements:
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), db.engine.begin() as conn:
            conn.exec_driver_sql(statement)
    assert len(_rows(db)) == 2


def _forge(db: Database, seq: int, prev_hash: str) -> str:
    """Insert a well-formed, correctly hashed event (no trigger stops an INSERT)."""
    row = {
        "id": new_id("aud"),
        "tenant_id": T,
        "seq": seq,
        "occurred_at": NOW,
        "actor_type": "user",
        "actor_id": "usr_intruder",
        "action": "user.update",
        "resource_type": "user",
        "resource_id": "usr_9",
        "request_id": None,
        "ip": None,
        "outcome": "success",
        "phi": False,
        "diff": None,
        "prev_hash": prev_hash,
    }
    row["hash"] = event_hash(*(row[name] for name in FIELDS))
    with db.engine.begin() as conn:
        conn.execute(AuditEvent.__table__.insert(), row)
    return str(row["id"])


@pytest.fixture
def six(db: Database) -> list[Appended]:
    events = _chain(db, 6)
    assert _verify(db).verified == 6
    return events


def test_a_changed_field_is_named(db: Database, six: list[Appended]) -> None:
    tamper(db, "UPDATE audit_events SET actor_id = 'usr_someone_else' WHERE seq = 3")
    report = _verify(db)
    assert report.error is not None and report.verified == 2
    assert (report.error.kind, report.error.seq, report.error.event_id) == ("changed", 3, six[2].id)
    assert six[2].id in report.error.detail


def test_a_changed_diff_is_named(db: Database, six: list[Appended]) -> None:
    forged = '{"role": {"new": "owner", "old": "clinician"}}'
    tamper(db, "UPDATE audit_events SET diff = :d WHERE seq = 2", d=forged)
    report = _verify(db)
    assert report.error is not None
    assert (report.error.kind, report.error.event_id) == ("changed", six[1].id)


def test_the_same_values_stored_differently_still_verify(db: Database, six: list[Appended]) -> None:
    # e.g. after a dump and restore that rewrote the JSON: same values, other text
    tamper(
        db,
        "UPDATE audit_events SET diff = :d WHERE seq = 2",
        d='{"role":{"old":"clinician","new":"front_desk"}}',
    )
    report = _verify(db)
    assert report.ok and report.verified == 6 and report.reparsed == 1


def test_a_deleted_event_is_named(db: Database, six: list[Appended]) -> None:
    tamper(db, "DELETE FROM audit_events WHERE seq = 3")
    report = _verify(db)
    assert report.error is not None and report.verified == 2
    assert (report.error.kind, report.error.seq, report.error.event_id) == ("deleted", 3, None)
    assert six[3].id in report.error.detail


def test_a_deleted_event_hidden_by_renumbering_is_named(db: Database, six: list[Appended]) -> None:
    tamper(db, "DELETE FROM audit_events WHERE seq = 3")
    renumber_from(db, 4, T, by=-1)
    tamper(db, "UPDATE audit_chain_heads SET seq = 5")
    report = _verify(db)
    assert report.error is not None
    assert (report.error.kind, report.error.seq) == ("deleted", 3)


def test_an_inserted_event_is_named(db: Database, six: list[Appended]) -> None:
    renumber_from(db, 3, T, by=1)
    forged = _forge(db, 3, prev_hash=six[1].hash)  # links to event 2, hashed correctly
    report = _verify(db)
    assert report.error is not None and report.verified == 2
    assert (report.error.kind, report.error.seq, report.error.event_id) == ("inserted", 3, forged)


def test_an_event_appended_behind_the_logs_back_is_named(db: Database, six: list[Appended]) -> None:
    forged = _forge(db, 7, prev_hash=six[5].hash)
    report = _verify(db)
    assert report.error is not None and report.verified == 6
    assert (report.error.kind, report.error.seq, report.error.event_id) == ("inserted", 7, forged)


def test_a_truncated_tail_is_caught_by_the_head(db: Database, six: list[Appended]) -> None:
    tamper(db, "DELETE FROM audit_events WHERE seq >= 5")
    report = _verify(db)
    assert report.error is not None and report.verified == 4
    assert (report.error.kind, report.error.seq) == ("truncated", 5)
    assert six[3].id in report.error.detail


def test_a_changed_and_rehashed_event_is_named(db: Database, six: list[Appended]) -> None:
    row = _rows(db)[2]
    fields = {name: getattr(row, name) for name in FIELDS} | {"action": "user.read"}
    rehashed = event_hash(*fields.values())
    tamper(db, "UPDATE audit_events SET action = 'user.read', hash = :h WHERE seq = 3", h=rehashed)
    report = _verify(db)
    assert report.error is not None
    assert (report.error.kind, report.error.seq, report.error.event_id) == ("changed", 3, six[2].id)


def test_a_broken_chain_does_not_stop_the_others(db: Database) -> None:
    _chain(db, 7, tenant="ten_a")
    _chain(db, 7, tenant="ten_b")
    tamper(db, "UPDATE audit_events SET action = 'user.read' WHERE tenant_id = 'ten_a' AND seq = 2")
    # Small batches: the first chain's rows are left unread mid-stream.
    reports = {r.tenant_id: r for r in verify_chains(db.engine, batch_size=2)}
    assert reports["ten_a"].error is not None and reports["ten_a"].error.seq == 2
    assert reports["ten_b"].ok and reports["ten_b"].verified == 7


def test_a_missing_head_is_named(db: Database, six: list[Appended]) -> None:
    tamper(db, "DELETE FROM audit_chain_heads")
    report = _verify(db)
    assert report.error is not None and report.error.kind == "head"


def test_only_a_kept_head_exposes_a_rewrite_of_the_whole_chain(
    db: Database, six: list[Appended]
) -> None:
    kept = _head(db)
    prev = GENESIS
    for row in _rows(db):  # the strongest attacker rewrites every event and the head
        fields = {name: getattr(row, name) for name in FIELDS}
        fields |= {"actor_id": "usr_scapegoat", "prev_hash": prev}
        prev = event_hash(*fields.values())
        tamper(
            db,
            "UPDATE audit_events SET actor_id = 'usr_scapegoat', prev_hash = :p, hash = :h "
            "WHERE id = :id",
            p=fields["prev_hash"],
            h=prev,
            id=row.id,
        )
    tamper(db, "UPDATE audit_chain_heads SET hash = :h", h=prev)
    report = _verify(db)
    assert report.ok  # self-consistent again...
    assert (report.head_seq, report.head_hash) != kept  # ...but not the head kept elsewhere


def test_eight_concurrent_writers_neither_fork_nor_lose_links(db: Database) -> None:
    writers, transactions = 8, 15
    start = threading.Barrier(writers)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            start.wait()
            for i in range(transactions):
                with db.write() as session:  # many small transactions, two chains each
                    _add(session, T, n * 100 + i)
                    _add(session, T, n * 100 + i)
                    _add(session, "ten_other", n * 100 + i)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors[0]
    for tenant, expected in (
        (T, writers * transactions * 2),
        ("ten_other", writers * transactions),
    ):
        rows = _rows(db, tenant)
        assert [r.seq for r in rows] == list(range(1, expected + 1))
        assert _head(db, tenant) == (expected, rows[-1].hash)
        report = _verify(db, tenant)
        assert report.ok and report.verified == expected
