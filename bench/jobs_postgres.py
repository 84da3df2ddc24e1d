"""No-op jobs enqueued and completed per second on PostgreSQL: ClinicBridge vs procrastinate
and pgqueuer, side by side on the same server in the same run.

Each library gets a fresh database and two worker processes, started and idle before
the clock starts. The clock runs from the first enqueue (bulk, as each library
recommends: our ``enqueue_many``, procrastinate's ``batch_defer_async``, pgqueuer's
``enqueue`` with lists; batches of --batch) until each library's own table says that
every job succeeded. Rounds are interleaved; the median round counts. Target: our rate
at least pgqueuer's. Needs the ``bench`` extra. Prints one JSON object.

    scripts/with-postgres.sh .venv/bin/python bench/jobs_postgres.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

import _rivals
from _jobs import (
    alive,
    clinicbridge_env,
    count,
    migrate,
    our_workers,
    pg_database,
    processes,
    utcnow,
    wait_until,
)
from clinicbridge.db import models  # noqa: F401  (all tables: Job refers to tenants)
from clinicbridge.db.engine import create_database
from clinicbridge.jobs.queue import NewJob, enqueue_many
from noop_jobs import NOOP

SETTLE_S = 1.0  # after the workers are up: let them finish starting (LISTEN, first polls)


@dataclass(frozen=True)
class Library:
    name: str
    setup: Callable[[str, dict[str, str]], None]  # schema, given the URL and worker env
    workers: Callable[[str, argparse.Namespace], list[list[str]]]
    ready_sql: str  # how many worker processes are up
    enqueue: Callable[[str, int, int], None]
    done_sql: str  # how many jobs succeeded
    left_sql: str  # how many jobs did not (checked at the end: must be 0)


def _ours_enqueue(url: str, jobs: int, batch: int) -> None:
    db = create_database(url, pool_size=1)
    for start in range(0, jobs, batch):
        with db.write() as session:
            new = [NewJob(NOOP) for _ in range(min(batch, jobs - start))]
            enqueue_many(session, new, now=utcnow())
    db.dispose()


def _rival_workers(library: str) -> Callable[[str, argparse.Namespace], list[list[str]]]:
    def commands(url: str, args: argparse.Namespace) -> list[list[str]]:
        # not `python bench/_rivals.py`: procrastinate wants its App outside __main__
        code = "import sys; from bench._rivals import main; main(sys.argv[1:])"
        cmd = [sys.executable, "-c", code, library, url, str(args.rival_concurrency)]
        return [cmd] * args.workers

    return commands


LIBRARIES = [
    Library(
        "clinicbridge",
        lambda url, env: migrate(env),  # `clinicbridge db upgrade`
        lambda url, a: our_workers(a.workers, a.concurrency, *a.worker_args.split()),
        "SELECT count(*) FROM worker_heartbeats",
        _ours_enqueue,
        "SELECT count(*) FROM jobs WHERE state = 'succeeded'",
        "SELECT count(*) FROM jobs WHERE state <> 'succeeded'",
    ),
    Library(
        "procrastinate",
        lambda url, env: asyncio.run(_rivals.procrastinate_setup(url)),
        _rival_workers("procrastinate"),
        "SELECT count(*) FROM procrastinate_workers",
        lambda url, n, b: asyncio.run(_rivals.procrastinate_enqueue(url, n, b)),
        "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
        "SELECT count(*) FROM procrastinate_jobs WHERE status <> 'succeeded'",
    ),
    Library(
        "pgqueuer",
        lambda url, env: asyncio.run(_rivals.pgqueuer_setup(url)),
        _rival_workers("pgqueuer"),
        # one connection per worker process; pgqueuer keeps no table of workers
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()",
        lambda url, n, b: asyncio.run(_rivals.pgqueuer_enqueue(url, n, b)),
        "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'",
        "SELECT (SELECT count(*) FROM pgqueuer)"
        " + (SELECT count(*) FROM pgqueuer_log"
        " WHERE status IN ('exception', 'failed', 'canceled'))",
    ),
]


def measure(lib: Library, server: str, args: argparse.Namespace) -> dict[str, float]:
    with pg_database(server, lib.name) as url, tempfile.TemporaryDirectory() as tmp:
        env = clinicbridge_env(url, tmp)
        lib.setup(url, env)
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            with processes(lib.workers(url, args), env) as procs:
                wait_until(
                    lambda: alive(procs) and count(engine, lib.ready_sql) >= args.workers,
                    timeout=60,
                    what=f"{lib.name} workers to start",
                )
                time.sleep(SETTLE_S)
                start = time.perf_counter()
                lib.enqueue(url, args.jobs, args.batch)
                enqueued = time.perf_counter() - start
                wait_until(
                    lambda: alive(procs) and count(engine, lib.done_sql) >= args.jobs,
                    timeout=args.timeout,
                    what=f"{lib.name} to finish {args.jobs} jobs",
                )
                total = time.perf_counter() - start
            left = count(engine, lib.left_sql)
        finally:
            engine.dispose()
    if left:
        raise RuntimeError(f"{lib.name}: {left} jobs did not succeed")
    return {
        "jobs_per_s": round(args.jobs / total),
        "enqueue_s": round(enqueued, 3),
        "total_s": round(total, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1_000, help="jobs per enqueue statement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="worker processes per library")
    parser.add_argument("--concurrency", type=int, default=4, help="our handler threads")
    parser.add_argument("--worker-args", default="", help="more `clinicbridge worker` options")
    parser.add_argument("--rival-concurrency", type=int, default=10, help="procrastinate's")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per drain")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("CLINICBRIDGE_TEST_DATABASE_URL"),
        help="PostgreSQL server to create databases on (default: $CLINICBRIDGE_TEST_DATABASE_URL)",
    )
    parser.add_argument("--only", nargs="*", default=[lib.name for lib in LIBRARIES])
    args = parser.parse_args()
    if not args.database_url or not args.database_url.startswith("postgresql"):
        print(
            "needs --database-url or CLINICBRIDGE_TEST_DATABASE_URL (PostgreSQL)", file=sys.stderr
        )
        return 2
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in args.only}
    for _ in range(args.rounds):
        for lib in LIBRARIES:
            if lib.name in rounds:
                rounds[lib.name].append(measure(lib, args.database_url, args))
    median = {
        name: min(runs, key=lambda r: abs(r["jobs_per_s"] - _median_rate(runs)))
        for name, runs in rounds.items()
    }
    ours = _median_rate(rounds.get("clinicbridge", []))
    target = _median_rate(rounds.get("pgqueuer", []))
    result = {
        "benchmark": "jobs_postgres",
        "jobs": args.jobs,
        "enqueue_batch": args.batch,
        "worker_processes": args.workers,
        "settings": {
            "clinicbridge": f"--concurrency {args.concurrency} {args.worker_args}".strip(),
            "procrastinate": f"concurrency={args.rival_concurrency}",
            "pgqueuer": "QueueManager.run() defaults (batch_size=10)",
        },
        "median_round": median,
        "round_rates": {name: [r["jobs_per_s"] for r in runs] for name, runs in rounds.items()},
        "target": "clinicbridge jobs_per_s >= pgqueuer jobs_per_s (medians)",
        "pass": bool(ours and target and ours >= target),
    }
    print(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


def _median_rate(runs: list[dict[str, float]]) -> float:
    return statistics.median(r["jobs_per_s"] for r in runs) if runs else 0.0


if __name__ == "__main__":
    sys.exit(main())
