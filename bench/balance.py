"""The balance of a patient with 10,000 ledger entries: ``SUM(amount)`` over the covering
index ``ix_ledger_entries_balance`` (``ledger.balance_of``), next to a plain
``SELECT count(*)`` of the same rows (the baseline), in the same run, on a migrated
SQLite database (``--database-url postgresql`` for ``$CLINICBRIDGE_TEST_DATABASE_URL``).
Other patients' entries (90,000 more) are in the table too, so the index has to do its
work. Target: median <= 5 ms (the p99 is reported next to the baseline's: on a shared
2-core machine both tails are scheduling noise). Prints one JSON object; exits non-zero
if the target fails or the sum is wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime

import sqlalchemy as sa

from _webhooks import postgres_database
from clinicbridge.core.ids import new_id
from clinicbridge.core.tenancy import create_tenant
from clinicbridge.db.engine import Database, create_database
from clinicbridge.db.migrate import upgrade
from clinicbridge.patients.models import Patient
from clinicbridge.payments.ledger import balance_of
from clinicbridge.payments.models import LedgerEntry

TARGET_MEDIAN_MS = 5.0
ENTRIES, OTHERS, PATIENTS = 10_000, 90_000, 10
ROUNDS = 300


def _seed(db: Database) -> tuple[str, str, int]:
    now = datetime.now(UTC)
    with db.write() as session:
        tenant = create_tenant(session, name="Bench Clinic", now=now, currency="CAD")
        patients = [
            Patient(
                id=new_id("pat"),
                tenant_id=tenant.id,
                first_name=f"P{i}",
                last_name="Bench",
                first_norm=f"p{i}",
                last_norm="bench",
                name_key="P BNX",
                created_by="bench",
                created_at=now,
                updated_at=now,
            )
            for i in range(PATIENTS)
        ]
        session.add_all(patients)
        session.flush()
        tenant_id, target = tenant.id, patients[0].id
    expected = 0
    rows = []
    for i in range(ENTRIES + OTHERS):
        patient = target if i < ENTRIES else patients[1 + i % (PATIENTS - 1)].id
        kind, amount = ("charge", 1000 + i % 97) if i % 3 else ("payment", -(500 + i % 89))
        if patient == target:
            expected += amount
        rows.append(
            {
                "id": new_id("led"),
                "tenant_id": tenant_id,
                "patient_id": patient,
                "kind": kind,
                "amount": amount,
                "currency": "cad",
                "description": "bench",
                "source_key": f"bench:{i}",
                "occurred_at": now,
                "created_by": "bench",
                "created_at": now,
            }
        )
    with db.write() as session:
        for start in range(0, len(rows), 5000):
            session.execute(sa.insert(LedgerEntry), rows[start : start + 5000])
    with db.engine.connect() as conn:  # fresh statistics for the planner, as in production
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    return tenant_id, target, expected


def _time(fn: object, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append((time.perf_counter() - started) * 1000)
    return out


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def run(url: str) -> dict[str, object]:
    db = create_database(url)
    try:
        upgrade(db.engine)
        tenant_id, patient_id, expected = _seed(db)
        count = (
            sa.select(sa.func.count())
            .select_from(LedgerEntry)
            .where(LedgerEntry.tenant_id == tenant_id, LedgerEntry.patient_id == patient_id)
        )
        with db.engine.connect() as conn:
            got = balance_of(conn, tenant_id, patient_id, "cad")
            counted = conn.execute(count).scalar_one()
            plan = (
                " | ".join(
                    str(r[-1])
                    for r in conn.exec_driver_sql(
                        "EXPLAIN QUERY PLAN SELECT sum(amount) FROM ledger_entries "
                        "WHERE tenant_id=? AND patient_id=? AND currency=?",
                        (tenant_id, patient_id, "cad"),
                    )
                )
                if db.dialect == "sqlite"
                else ""
            )
            for _ in range(20):  # warm the caches
                balance_of(conn, tenant_id, patient_id, "cad")
                conn.execute(count).scalar_one()
            sums, counts = [], []
            for _ in range(ROUNDS // 50):  # interleaved rounds
                sums += _time(lambda: balance_of(conn, tenant_id, patient_id, "cad"), 50)
                counts += _time(lambda: conn.execute(count).scalar_one(), 50)
    finally:
        db.dispose()
    return {
        "correct": got == expected and counted == ENTRIES,
        "balance_ms": {"median": round(statistics.median(sums), 3), "p99": round(_p(sums, 99), 3)},
        "baseline_count_ms": {
            "median": round(statistics.median(counts), 3),
            "p99": round(_p(counts, 99), 3),
        },
        "plan": plan,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    postgres = args.database_url
    if postgres == "postgresql":
        postgres = os.environ["CLINICBRIDGE_TEST_DATABASE_URL"]
    if postgres:
        with postgres_database(postgres) as url:
            result = run(url)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(f"sqlite:///{tmp}/balance.db")
    median = result["balance_ms"]["median"]  # type: ignore[index]
    ok = bool(result["correct"]) and median <= TARGET_MEDIAN_MS
    print(
        json.dumps(
            {
                "bench": "balance",
                "database": "postgresql" if postgres else "sqlite",
                "entries": ENTRIES,
                "other_entries": OTHERS,
                **result,
                "target_median_ms": TARGET_MEDIAN_MS,
                "ok": ok,
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
