"""Workers killed with SIGKILL lose nothing and duplicate nothing.

2,000 jobs each write a row keyed by their id; the worker process is killed at
random moments three times and restarted. Afterwards every job has succeeded,
none is dead, and there is exactly one row per job.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from clinicbridge.core.clock import SystemClock
from clinicbridge.db.engine import Database
from clinicbridge.jobs import queue as q
from clinicbridge.jobs.models import Job
from tests.conftest import ON_POSTGRES
from tests.crash_jobs import MARKS, create_marks_table

JOBS = 2000
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clinicbridge.cli",
            "worker",
            "--import",
            "tests.crash_jobs",
            "--lease-seconds",
            "2",
            "--concurrency",
            "4",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _counts(db: Database) -> dict[str, int]:
    with db.read() as session:
        rows = session.execute(
            sa.select(Job.state, sa.func.count())
            .where(Job.kind == "crash.mark")  # periodic housekeeping jobs run too
            .group_by(Job.state)
        ).all()
    return {state: n for state, n in rows}


def test_sigkill_loses_and_duplicates_nothing(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    create_marks_table(db.engine)
    with db.write() as session:
        q.enqueue_many(
            session,
            [q.NewJob("crash.mark", {"n": i}) for i in range(JOBS)],
            now=SystemClock().now(),
        )
    env = {
        **os.environ,
        "CLINICBRIDGE_DATABASE_URL": database_url,
        "CLINICBRIDGE_MASTER_KEY_FILE": str(tmp_path / "master.key"),
        "CLINICBRIDGE_LOG_LEVEL": "WARNING",
    }
    workers = 2 if ON_POSTGRES else 1
    procs = [_start_worker(env) for _ in range(workers)]
    rng = random.Random(7)
    kills = 0
    try:
        while kills < 3:
            time.sleep(rng.uniform(0.4, 1.2))
            victim = rng.randrange(len(procs))
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait(10)
            kills += 1
            assert _counts(db).get("succeeded", 0) < JOBS, "finished before the third kill"
            procs[victim] = _start_worker(env)
        deadline = time.monotonic() + 120
        while _counts(db).get("succeeded", 0) < JOBS:
            assert time.monotonic() < deadline, _counts(db)
            assert all(p.poll() is None for p in procs), "a worker exited"
            time.sleep(0.2)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
    assert _counts(db) == {"succeeded": JOBS}
    with db.read() as session:
        marks = session.execute(sa.select(MARKS.c.job_id)).scalars().all()
        job_ids = session.execute(sa.select(Job.id).where(Job.kind == "crash.mark")).scalars().all()
    assert len(marks) == JOBS and sorted(marks) == sorted(job_ids)
