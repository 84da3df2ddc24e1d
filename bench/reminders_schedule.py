"""Reminders for 100,000 upcoming bookings, planned in bulk on SQLite.

Seeds a fresh migrated SQLite database with one clinic (America/Toronto), and
--bookings upcoming bookings (raw Core inserts, not timed) from 3 hours to about 6 weeks
ahead (50 providers, back to back), at all hours, so quiet hours move or skip some of the reminders.
Times ``schedule_upcoming`` (default rule: 24 h and 2 h before, 21:00-08:00 quiet),
batches of --batch bookings, one transaction each. Target: <= 10 s.

Baseline in the same run: the same rows it wrote (booking_reminders and jobs, same
count) inserted with the driver's plain ``executemany`` into a copy of the seeded
database taken before the run, same batches, one commit per batch.

Also checks: a second run plans nothing, and every booking has its rows.
Prints one JSON object; exits 0 if the target passes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from _jobs import clinicbridge_env, count, migrate
from clinicbridge.core.ids import new_id
from clinicbridge.core.tenancy import create_tenant
from clinicbridge.db import models  # noqa: F401  (all tables)
from clinicbridge.db.engine import Database, create_database
from clinicbridge.messaging.reminders import schedule_upcoming
from clinicbridge.patients.models import Patient
from clinicbridge.scheduling.models import Booking, Provider, Service, TimeClaim

TARGET_S = 10.0
TZ = "America/Toronto"
PATIENTS = 1_000
PROVIDERS = 50
REMINDER_INSERT = (
    "INSERT INTO booking_reminders (id, tenant_id, booking_id, offset_minutes, starts_at,"
    " due_at, job_id, status, channel, message_id, reason, created_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
JOB_INSERT = (
    "INSERT INTO jobs (id, tenant_id, queue, kind, payload, state, attempts, max_attempts,"
    " run_at, dedupe_key, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def seed(db: Database, bookings: int, now: datetime) -> str:
    """One clinic, provider, service, PATIENTS patients and ``bookings`` bookings."""
    with db.write() as session:
        tenant = create_tenant(session, name="Bench Clinic", now=now, timezone=TZ)
        tid = tenant.id
        providers = [
            Provider(
                id=new_id("prv"),
                tenant_id=tid,
                display_name=f"Dr. Bench {i}",
                timezone=TZ,
                created_at=now,
                updated_at=now,
            )
            for i in range(PROVIDERS)
        ]
        service = Service(
            id=new_id("svc"),
            tenant_id=tid,
            name="Consultation",
            duration_minutes=30,
            slot_interval_minutes=15,
            modality="in_person",
            created_at=now,
            updated_at=now,
        )
        session.add_all([*providers, service])
        session.flush()
        patients = [
            {
                "id": new_id("pat"),
                "tenant_id": tid,
                "first_name": f"Bench{i}",
                "last_name": "Patient",
                "first_norm": f"bench{i}",
                "last_norm": "patient",
                "name_key": f"bench{i}",
                "created_by": "bench",
                "created_at": now,
                "updated_at": now,
            }
            for i in range(PATIENTS)
        ]
        session.execute(sa.insert(Patient), patients)
        pids, sid = [p.id for p in providers], service.id
    first = now.replace(second=0, microsecond=0) + timedelta(hours=3)
    claims_t = TimeClaim.__table__
    bookings_t = Booking.__table__
    for lo in range(0, bookings, 10_000):
        claims, rows = [], []
        for i in range(lo, min(lo + 10_000, bookings)):
            # each provider's bookings back to back, providers a minute apart
            pid = pids[i % PROVIDERS]
            start = first + timedelta(minutes=(i // PROVIDERS) * 30 + i % PROVIDERS % 30)
            end = start + timedelta(minutes=30)
            cid = new_id("clm")
            claims.append(
                {
                    "id": cid,
                    "tenant_id": tid,
                    "provider_id": pid,
                    "service_id": sid,
                    "starts_at": start,
                    "ends_at": end,
                    "blocked_from": start,
                    "blocked_until": end,
                    "capacity": 1,
                    "seats_taken": 1,
                    "active": True,
                }
            )
            rows.append(
                {
                    "id": new_id("bkg"),
                    "tenant_id": tid,
                    "claim_id": cid,
                    "service_id": sid,
                    "provider_id": pid,
                    "patient_id": patients[i % PATIENTS]["id"],
                    "status": "confirmed" if i % 3 == 0 else "booked",
                    "starts_at": start,
                    "ends_at": end,
                    "confirmation_code": f"B{i:07d}",
                    "source": "api",
                    "version": 1,
                    "created_by": "bench",
                    "created_at": now,
                    "updated_at": now,
                }
            )
        with db.write() as session:
            session.connection().execute(sa.insert(claims_t), claims)  # type: ignore[arg-type]
            session.connection().execute(sa.insert(bookings_t), rows)  # type: ignore[arg-type]
    return tid


def baseline(path: str, db_ours: Database, batch: int) -> float:
    """Insert the rows the run wrote, as plain tuples, into the pre-run copy."""
    with db_ours.engine.connect() as conn:
        reminders = [tuple(r) for r in conn.exec_driver_sql("SELECT * FROM booking_reminders")]
        jobs = [
            tuple(r)
            for r in conn.exec_driver_sql(
                "SELECT id, tenant_id, queue, kind, payload, state, attempts, max_attempts,"
                " run_at, dedupe_key, created_at, updated_at FROM jobs"
                " WHERE kind = 'messaging.reminder'"
            )
        ]
    plain = create_database(f"sqlite:///{path}", pool_size=1)
    raw = plain.engine.raw_connection()
    try:
        cursor = raw.cursor()
        per = max(1, len(reminders) // max(1, len(jobs) or 1))
        start = time.perf_counter()
        j = 0
        for i in range(0, len(reminders), batch * per):
            cursor.execute("BEGIN IMMEDIATE")
            cursor.executemany(REMINDER_INSERT, reminders[i : i + batch * per])
            cursor.executemany(JOB_INSERT, jobs[j : j + batch * per])
            j += batch * per
            cursor.execute("COMMIT")
        if j < len(jobs):
            cursor.execute("BEGIN IMMEDIATE")
            cursor.executemany(JOB_INSERT, jobs[j:])
            cursor.execute("COMMIT")
        seconds = time.perf_counter() - start
    finally:
        raw.close()
        plain.dispose()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bookings", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2_000, help="bookings per transaction")
    args = parser.parse_args()
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/ours.db"
        migrate(clinicbridge_env(url, tmp))
        db = create_database(url, pool_size=1)
        seed(db, args.bookings, now)
        db.dispose()
        shutil.copyfile(f"{tmp}/ours.db", f"{tmp}/plain.db")
        db = create_database(url, pool_size=1)
        try:
            start = time.perf_counter()
            jobs = schedule_upcoming(db, now=now, batch=args.batch)
            ours_s = time.perf_counter() - start
            again_start = time.perf_counter()
            again = schedule_upcoming(db, now=now, batch=args.batch)
            again_s = time.perf_counter() - again_start
            rows = count(db.engine, "SELECT count(*) FROM booking_reminders")
            statuses = dict(
                db.engine.connect()
                .exec_driver_sql("SELECT status, count(*) FROM booking_reminders GROUP BY status")
                .all()
            )
            job_rows = count(
                db.engine, "SELECT count(*) FROM jobs WHERE kind = 'messaging.reminder'"
            )
            plain_s = baseline(f"{tmp}/plain.db", db, args.batch)
        finally:
            db.dispose()
    ok = rows == 2 * args.bookings and job_rows == jobs and again == 0
    result = {
        "benchmark": "reminders_schedule",
        "bookings": args.bookings,
        "batch": args.batch,
        "reminder_rows": rows,
        "reminder_statuses": statuses,
        "jobs": jobs,
        "schedule_upcoming_s": round(ours_s, 3),
        "second_run_s": round(again_s, 3),
        "second_run_jobs": again,
        "baseline_plain_executemany_s": round(plain_s, 3),
        "ratio_to_baseline": round(ours_s / plain_s, 2) if plain_s else None,
        "target_s": TARGET_S,
        "integrity_ok": ok,
        "pass": ok and ours_s <= TARGET_S,
    }
    print(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
