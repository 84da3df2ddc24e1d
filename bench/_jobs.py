"""Shared pieces of the job-queue benchmarks: databases, worker processes, bounded waits."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "clinicbridge.cli"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def wait_until(
    check: Callable[[], bool], *, timeout: float, what: str, every: float = 0.01
) -> None:
    """Poll ``check`` until it is true; raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def clinicbridge_env(database_url: str, tmp: str) -> dict[str, str]:
    return {
        **os.environ,
        "CLINICBRIDGE_DATABASE_URL": database_url,
        "CLINICBRIDGE_MASTER_KEY_FILE": f"{tmp}/master.key",
        "CLINICBRIDGE_LOG_LEVEL": "WARNING",
    }


def migrate(env: dict[str, str]) -> None:
    subprocess.run([*CLI, "db", "upgrade"], env=env, check=True, capture_output=True, timeout=120)


@contextmanager
def processes(
    commands: Sequence[Sequence[str]], env: dict[str, str]
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start the commands (cwd: the repository); stop them on exit, killing if they hang."""
    # SIGTERM (e.g. from `timeout`) unwinds like an error, so the workers are stopped too
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for cmd in commands:
            procs.append(subprocess.Popen(list(cmd), env=env, cwd=ROOT))
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def alive(procs: Sequence[subprocess.Popen[bytes]]) -> bool:
    """True, or an error if a worker process has died (a wait on it would be in vain)."""
    for p in procs:
        if p.poll() is not None:
            raise RuntimeError(f"worker {p.args!r} exited with {p.returncode}")
    return True


def our_workers(count: int, concurrency: int, *extra: str) -> list[list[str]]:
    args = ["worker", "--import", "bench.noop_jobs", "--concurrency", str(concurrency), *extra]
    return [[*CLI, *args] for _ in range(count)]


def count(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(sql).scalar_one())


@contextmanager
def pg_database(server_url: str, label: str) -> Iterator[str]:
    """A fresh database on the server of ``server_url``; dropped afterwards."""
    admin_url = sa.make_url(server_url.replace("postgresql://", "postgresql+psycopg://", 1))
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        url = admin_url.set(drivername="postgresql", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def percentiles_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))], 2),
        "max_ms": round(ms[-1], 2),
    }
