"""Audit log benchmark: append rates, and `clinicbridge audit verify` of 1,000,000 events.

Targets (exit 0 when met):
- appends, batched (`append_many`, 500 events per transaction, one writer): >= 5,000
  events/s (also reported: 500 `append()` calls per transaction, and one event per
  transaction, which the commit dominates);
- `clinicbridge audit verify` of 1,000,000 events, run as a process: <= 10 s.

Baselines measured in the same run, because a shared 2-core machine is noisy:
- appends: plain INSERTs of same-size audit rows (no lock, no hashing, no chain
  head), in the same statement and transaction shapes, rounds interleaved;
- verify: streaming the same rows through the same cursor without hashing.

The million events are generated with batched Core inserts, hashed by the same
`event_hash` as `append`, stored in the same canonical form (the bench checks
that verify never had to re-parse a row).

    .venv/bin/python bench/audit.py [--database-url URL] [--events N]

A PostgreSQL URL gets a throwaway database created next to it and dropped after.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from clinicbridge.audit import GENESIS, NewEvent, append, append_many, event_hash
from clinicbridge.audit.chain import FIELDS
from clinicbridge.audit.models import AuditChainHead, AuditEvent
from clinicbridge.audit.verify import chain_rows, verify_chains
from clinicbridge.core.ids import new_id
from clinicbridge.db.engine import Database, create_database, normalize_url
from clinicbridge.db.migrate import upgrade

APPEND_TARGET = 5_000.0  # events/s, batched
VERIFY_TARGET_S = 10.0
BATCH = 500  # appends per transaction in the batched case
ROUNDS = 3
SAMPLE_DIFF = {"role": {"new": "front_desk", "old": "clinician"}}
_INSERT = AuditEvent.__table__.insert()


def _event(i: int, at: datetime) -> dict[str, Any]:
    """A typical event: ids of our usual size, a small diff on every other one."""
    return {
        "actor_type": "user",
        "actor_id": new_id("usr"),
        "action": "user.update",
        "resource_type": "user",
        "resource_id": new_id("usr"),
        "occurred_at": at,
        "request_id": new_id("req"),
        "ip": "203.0.113.7",
        "diff": SAMPLE_DIFF if i % 2 else None,
    }


@contextmanager
def database(url: str | None) -> Iterator[tuple[Database, str]]:
    """A migrated, empty database: a temp SQLite file, or a throwaway PostgreSQL db."""
    if not url or url.startswith("sqlite"):
        with tempfile.TemporaryDirectory() as tmp:
            db_url = url or f"sqlite:///{tmp}/bench.db"
            db = create_database(db_url)
            upgrade(db.engine)
            yield db, db_url
            db.dispose()
        return
    admin = sa.create_engine(normalize_url(url), isolation_level="AUTOCOMMIT")
    name = f"cb_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    db_url = sa.make_url(normalize_url(url)).set(database=name)
    plain = db_url.render_as_string(hide_password=False)
    db = create_database(plain)
    try:
        upgrade(db.engine)
        yield db, plain
    finally:
        db.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _rate(count: int, run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return count / (time.perf_counter() - started)


def bench_appends(db: Database, events: int) -> dict[str, Any]:
    """Three ways to append, each against plain inserts of the same rows in the same shape."""
    now = datetime.now(UTC)
    seq = iter(range(1, 10**9))

    def plain_rows(count: int) -> list[dict[str, Any]]:
        fixed = {"tenant_id": "ten_BASELINE", "outcome": "success", "phi": False}
        hashes = {"prev_hash": GENESIS, "hash": GENESIS}
        return [
            _event(i, now) | fixed | hashes | {"id": new_id("aud"), "seq": next(seq)}
            for i in range(count)
        ]

    def events_of(count: int) -> list[NewEvent]:
        return [NewEvent(tenant_id="ten_CHAINED", **_event(i, now)) for i in range(count)]

    def plain_many(session: Any, count: int) -> None:
        session.connection().execute(_INSERT, plain_rows(count))

    def chained_many(session: Any, count: int) -> None:
        append_many(session, events_of(count))

    def plain_each(session: Any, count: int) -> None:
        for row in plain_rows(count):
            session.connection().execute(_INSERT, row)

    def chained_each(session: Any, count: int) -> None:
        for i in range(count):
            append(session, tenant_id="ten_CHAINED", **_event(i, now))

    def in_transactions(write: Callable[[Any, int], None], count: int, size: int) -> float:
        started = time.perf_counter()
        for start in range(0, count, size):
            with db.write() as session:
                write(session, min(size, count - start))
        return count / (time.perf_counter() - started)

    modes = {  # name: (how, chained, plain, events per transaction, events)
        "batched": ("append_many: BATCH events, one INSERT, one transaction", chained_many,
                    plain_many, BATCH, events),
        "one_by_one": ("append() BATCH times in one transaction", chained_each, plain_each,
                       BATCH, events),
        "single": ("one append() per transaction (lock, insert, head, commit)", chained_each,
                   plain_each, 1, events // 10),
    }  # fmt: skip
    rates: dict[str, dict[str, list[float]]] = {m: {"chained": [], "plain": []} for m in modes}
    for _ in range(ROUNDS):  # interleaved, so load from elsewhere hits both alike
        for mode, (_how, chained, plain, size, count) in modes.items():
            per_round = count // ROUNDS
            rates[mode]["plain"].append(in_transactions(plain, per_round, size))
            rates[mode]["chained"].append(in_transactions(chained, per_round, size))
    result: dict[str, Any] = {}
    for mode, (how, *_rest) in modes.items():
        chained_rate = statistics.median(rates[mode]["chained"])
        plain_rate = statistics.median(rates[mode]["plain"])
        result[mode] = {
            "how": how.replace("BATCH", str(BATCH)),
            "events_per_s": round(chained_rate),
            "baseline_plain_insert_per_s": round(plain_rate),
            "ratio_to_baseline": round(chained_rate / plain_rate, 2),
        }
    return result


def generate(db: Database, tenant_id: str, count: int) -> float:
    """``count`` chained events for one clinic, in batched Core inserts; returns seconds."""
    started = time.perf_counter()
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    prev, batch = GENESIS, []
    with db.engine.begin() as conn:
        for seq in range(1, count + 1):
            row = {"id": new_id("aud"), "tenant_id": tenant_id, "seq": seq}
            row |= _event(seq, t0 + timedelta(milliseconds=seq))
            row |= {"outcome": "success", "phi": seq % 7 == 0, "prev_hash": prev}
            row["hash"] = prev = event_hash(*(row[name] for name in FIELDS))
            batch.append(row)
            if len(batch) == 10_000:
                conn.execute(_INSERT, batch)
                batch = []
        if batch:
            conn.execute(_INSERT, batch)
        conn.execute(
            AuditChainHead.__table__.insert(), {"tenant_id": tenant_id, "seq": count, "hash": prev}
        )
    if db.dialect == "postgresql":  # as autovacuum would after a bulk load
        with db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    return time.perf_counter() - started


def bench_verify(db: Database, url: str, count: int) -> dict[str, Any]:
    tenant = new_id("ten")
    generated_s = generate(db, tenant, count)

    started = time.perf_counter()  # baseline: the same rows, the same cursor, no hashing
    with db.engine.connect() as conn, conn.begin():
        fetched = sum(1 for _row in chain_rows(conn, tenant, 5_000))
    fetch_s = time.perf_counter() - started

    started, cpu = time.perf_counter(), time.process_time()
    (report,) = verify_chains(db.engine, tenant)
    in_process_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    assert report.ok and report.verified == count and fetched == count, report
    assert report.reparsed == 0, "generated rows are not stored in canonical form"

    env = {**os.environ, "CLINICBRIDGE_DATABASE_URL": url, "CLINICBRIDGE_LOG_LEVEL": "WARNING"}
    cli = [sys.executable, "-m", "clinicbridge.cli", "audit", "verify", "--tenant", tenant]
    started = time.perf_counter()
    done = subprocess.run(cli, env=env, capture_output=True, text=True, check=False)
    cli_s = time.perf_counter() - started
    summary = json.loads(done.stdout)
    assert done.returncode == 0 and summary["verified"] == count, done.stderr
    return {
        "events": count,
        "generate_s": round(generated_s, 1),
        "cli_verify_s": round(cli_s, 2),
        "in_process_verify_s": round(in_process_s, 2),
        "in_process_cpu_s": round(cpu_s, 2),
        "verify_events_per_s": round(count / in_process_s),
        "baseline_fetch_only_s": round(fetch_s, 2),
        "how": "driver cursor in batches of 5000 (PostgreSQL: one query read in chunks)",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--events", type=int, default=1_000_000, help="events to verify")
    parser.add_argument("--appends", type=int, default=30_000, help="events per append mode")
    args = parser.parse_args()
    with database(args.database_url) as (db, url):
        appends = bench_appends(db, args.appends)
        verified = bench_verify(db, url, args.events)
    met = {
        "append_batched_events_per_s >= 5000": appends["batched"]["events_per_s"] >= APPEND_TARGET,
        f"cli_verify_s({args.events}) <= 10": verified["cli_verify_s"] <= VERIFY_TARGET_S,
    }
    result = {
        "benchmark": "audit",
        "database": db.dialect,
        "append": appends,
        "verify": verified,
        "targets_met": met,
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
