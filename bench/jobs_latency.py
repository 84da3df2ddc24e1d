"""How soon an idle worker starts a new job: enqueue-commit to handler-start latency.

--samples jobs are enqueued one at a time, each in its own transaction, with a random
pause of 200-300 ms before each (long enough for an idle worker to back off to its
slowest poll, random so that commits fall at every phase of the poll). The clock starts
just before the commit and stops as the handler starts (``time.monotonic``, one clock
for every process of the machine). Three set-ups:

- sqlite_in_process: the embedded worker (a thread, as in ``clinicbridge serve``), woken
  by the after-commit hook;
- sqlite_worker_process: a ``clinicbridge worker`` process, which only polls;
- postgresql_worker_process: a ``clinicbridge worker`` process woken by LISTEN/NOTIFY
  (with --database-url or $CLINICBRIDGE_TEST_DATABASE_URL; skipped otherwise).

Baseline in the same run: the wake-up time of a thread waiting on a bare threading.Event.
Target: every sample within 100 ms (max_ms), in every set-up. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from _jobs import (
    alive,
    clinicbridge_env,
    count,
    migrate,
    our_workers,
    percentiles_ms,
    pg_database,
    processes,
    utcnow,
    wait_until,
)
from clinicbridge.core.clock import SystemClock
from clinicbridge.db import models  # noqa: F401  (all tables: Job refers to tenants)
from clinicbridge.db.engine import Database, create_database
from clinicbridge.jobs.queue import enqueue
from clinicbridge.jobs.worker import Worker
from noop_jobs import STAMP

TARGET_MS = 100.0
HEARTBEATS = "SELECT count(*) FROM worker_heartbeats"


def event_baseline(samples: int) -> list[float]:
    """A thread blocked on an Event; the time from set() to it running again."""
    event, done = threading.Event(), threading.Event()
    woke: list[float] = []

    def waiter() -> None:
        for _ in range(samples):
            event.wait()
            woke.append(time.monotonic())
            event.clear()
            done.set()

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    latencies = []
    for i in range(samples):
        time.sleep(random.uniform(0.01, 0.02))
        done.clear()
        start = time.monotonic()
        event.set()
        if not done.wait(5):
            raise TimeoutError("the Event baseline thread did not wake")
        latencies.append(woke[i] - start)
    thread.join(5)
    return latencies


def measure(db: Database, samples: int, stamps: Path) -> list[float]:
    committed: dict[int, float] = {}
    for i in range(samples):
        time.sleep(random.uniform(0.2, 0.3))
        with db.write() as session:
            enqueue(session, STAMP, {"i": i, "file": str(stamps)}, now=utcnow())
            committed[i] = time.monotonic()  # the commit follows as the block ends

    def started() -> dict[int, float]:
        lines = stamps.read_text().split("\n")[:-1] if stamps.exists() else []  # whole lines
        return {int(i): float(t) for i, t in (line.split() for line in lines)}

    wait_until(lambda: len(started()) >= samples, timeout=30, what="the last jobs to start")
    return [t - committed[i] for i, t in started().items()]


@contextmanager
def in_process_worker(db: Database) -> Iterator[None]:
    worker = Worker(db, SystemClock())  # the defaults of the embedded worker
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: count(db.engine, HEARTBEATS) >= 1, timeout=30, what="the worker")
        yield
    finally:
        worker.stop()
        thread.join(10)


@contextmanager
def worker_process(db: Database, env: dict[str, str]) -> Iterator[None]:
    with processes(our_workers(1, 4), env) as procs:
        wait_until(
            lambda: alive(procs) and count(db.engine, HEARTBEATS) >= 1,
            timeout=60,
            what="the worker process",
        )
        yield
        alive(procs)


def run(
    url: str,
    samples: int,
    worker: Callable[[Database, dict[str, str]], AbstractContextManager[None]],
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = clinicbridge_env(url, tmp)
        migrate(env)
        db = create_database(url, pool_size=2)
        try:
            with worker(db, env):
                time.sleep(0.5)
                latencies = measure(db, samples, Path(tmp) / "stamps.txt")
        finally:
            db.dispose()
    return percentiles_ms(latencies)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("CLINICBRIDGE_TEST_DATABASE_URL"),
        help="PostgreSQL server to create a database on (default: $CLINICBRIDGE_TEST_DATABASE_URL)",
    )
    args = parser.parse_args()
    results: dict[str, dict[str, float] | str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite_in_process"] = run(
            f"sqlite:///{tmp}/a.db", args.samples, lambda db, env: in_process_worker(db)
        )
        results["sqlite_worker_process"] = run(
            f"sqlite:///{tmp}/b.db", args.samples, worker_process
        )
    if args.database_url and args.database_url.startswith("postgresql"):
        with pg_database(args.database_url, "latency") as url:
            results["postgresql_worker_process"] = run(url, args.samples, worker_process)
    else:
        results["postgresql_worker_process"] = "skipped: no PostgreSQL --database-url"
    measured = [r for r in results.values() if isinstance(r, dict)]
    result = {
        "benchmark": "jobs_latency",
        "samples": args.samples,
        "enqueue_commit_to_handler_start": results,
        "baseline_threading_event_wakeup": percentiles_ms(event_baseline(args.samples)),
        "target": f"max_ms <= {TARGET_MS:.0f} in every set-up",
        "pass": all(r["max_ms"] <= TARGET_MS for r in measured),
    }
    print(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
