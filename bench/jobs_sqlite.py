"""The job queue on SQLite: no-op jobs enqueued+completed per second, and bulk enqueue.

1. Throughput: --workers `clinicbridge worker` processes (default 1) idle on a fresh
   database; the clock runs from the first ``enqueue_many`` (batches of --batch) until
   every job has succeeded. Target: >= 5,000 jobs/s.
2. Enqueue: 100,000 jobs with ``enqueue_many`` in batches of --batch into a fresh
   database, no worker running. Target: <= 5 s. Baseline in the same run: the same
   rows inserted with the driver's plain ``executemany`` into the same (migrated, empty)
   ``jobs`` table of another fresh database, same batches, one commit per batch.

Prints one JSON object; exits 0 if both targets pass.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from typing import Any

from _jobs import (
    alive,
    clinicbridge_env,
    count,
    migrate,
    our_workers,
    processes,
    utcnow,
    wait_until,
)
from clinicbridge.core.ids import new_id
from clinicbridge.db import models  # noqa: F401  (all tables: Job refers to tenants)
from clinicbridge.db.engine import Database, create_database
from clinicbridge.jobs.queue import DEFAULT_MAX_ATTEMPTS as MAX_ATTEMPTS
from clinicbridge.jobs.queue import NewJob, enqueue_many
from noop_jobs import NOOP

TARGET_JOBS_PER_S = 5_000
TARGET_ENQUEUE_S = 5.0
SETTLE_S = 1.0
DONE = "SELECT count(*) FROM jobs WHERE state = 'succeeded'"
LEFT = "SELECT count(*) FROM jobs WHERE state <> 'succeeded'"
PLAIN_INSERT = (
    "INSERT INTO jobs (id, tenant_id, queue, kind, payload, state, attempts, max_attempts,"
    " run_at, dedupe_key, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def enqueue(db: Database, jobs: int, batch: int) -> None:
    for start in range(0, jobs, batch):
        with db.write() as session:
            new = [NewJob(NOOP) for _ in range(min(batch, jobs - start))]
            enqueue_many(session, new, now=utcnow())


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/throughput.db"
        env = clinicbridge_env(url, tmp)
        migrate(env)
        db = create_database(url, pool_size=1)
        try:
            workers = our_workers(args.workers, args.concurrency, *args.worker_args.split())
            with processes(workers, env) as procs:
                wait_until(
                    lambda: (
                        alive(procs)
                        and count(db.engine, "SELECT count(*) FROM worker_heartbeats")
                        >= args.workers
                    ),
                    timeout=60,
                    what="workers to start",
                )
                time.sleep(SETTLE_S)
                start = time.perf_counter()
                enqueue(db, args.jobs, args.batch)
                enqueued = time.perf_counter() - start
                wait_until(
                    lambda: alive(procs) and count(db.engine, DONE) >= args.jobs,
                    timeout=args.timeout,
                    what=f"{args.jobs} jobs to finish",
                    every=0.005,
                )
                total = time.perf_counter() - start
            left = count(db.engine, LEFT)
        finally:
            db.dispose()
    if left:
        raise RuntimeError(f"{left} jobs did not succeed")
    return {
        "jobs": args.jobs,
        "worker_processes": args.workers,
        "worker_options": f"--concurrency {args.concurrency} {args.worker_args}".strip(),
        "enqueue_s": round(enqueued, 3),
        "total_s": round(total, 3),
        "jobs_per_s": round(args.jobs / total),
    }


def _plain_rows(jobs: int) -> list[tuple[object, ...]]:
    """What enqueue_many writes, as the driver takes it (SQLite's datetime text, JSON text)."""
    now = utcnow().replace(tzinfo=None).isoformat(sep=" ")
    return [
        (
            new_id("job"),
            None,
            "default",
            NOOP,
            "{}",
            "pending",
            0,
            MAX_ATTEMPTS,
            now,
            None,
            now,
            now,
        )
        for _ in range(jobs)
    ]


def bulk_enqueue(jobs: int, batch: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        dbs = []
        for name in ("ours", "plain"):
            url = f"sqlite:///{tmp}/{name}.db"
            migrate(clinicbridge_env(url, tmp))
            dbs.append(create_database(url, pool_size=1))
        ours, plain = dbs
        start = time.perf_counter()
        enqueue(ours, jobs, batch)
        ours_s = time.perf_counter() - start
        if count(ours.engine, "SELECT count(*) FROM jobs") != jobs:
            raise RuntimeError("enqueue_many lost jobs")
        rows = _plain_rows(jobs)
        raw = plain.engine.raw_connection()
        try:
            cursor = raw.cursor()
            start = time.perf_counter()
            for i in range(0, jobs, batch):
                cursor.execute("BEGIN IMMEDIATE")
                cursor.executemany(PLAIN_INSERT, rows[i : i + batch])
                cursor.execute("COMMIT")
            plain_s = time.perf_counter() - start
        finally:
            raw.close()
        for db in dbs:
            db.dispose()
    return {
        "jobs": jobs,
        "batch": batch,
        "enqueue_many_s": round(ours_s, 3),
        "baseline_plain_executemany_s": round(plain_s, 3),
        "ratio_to_baseline": round(ours_s / plain_s, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=50_000, help="for the throughput run")
    parser.add_argument("--enqueue-jobs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000, help="jobs per enqueue_many")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=4, help="handler threads each")
    parser.add_argument("--worker-args", default="", help="more `clinicbridge worker` options")
    parser.add_argument("--timeout", type=float, default=300, help="seconds for the drain")
    args = parser.parse_args()
    run = throughput(args)
    bulk = bulk_enqueue(args.enqueue_jobs, args.batch)
    result = {
        "benchmark": "jobs_sqlite",
        "throughput": run,
        "target_jobs_per_s": TARGET_JOBS_PER_S,
        "enqueue": bulk,
        "target_enqueue_s": TARGET_ENQUEUE_S,
        "pass": run["jobs_per_s"] >= TARGET_JOBS_PER_S
        and bulk["enqueue_many_s"] <= TARGET_ENQUEUE_S,
    }
    print(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
