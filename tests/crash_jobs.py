"""Job handlers for the crash tests; a worker subprocess loads them with --import."""

from __future__ import annotations

import time

import sqlalchemy as sa

from clinicbridge.jobs.registry import JobContext, registry

MARKS = sa.table("crash_marks", sa.column("job_id"))


def create_marks_table(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE crash_marks (job_id VARCHAR(32) PRIMARY KEY)")


@registry.handler("crash.mark")
def mark(job: JobContext) -> None:
    """Idempotent by job id, as every handler must be: a re-run adds nothing."""
    with job.db.write() as session:
        exists = session.execute(
            sa.select(MARKS.c.job_id).where(MARKS.c.job_id == job.job_id)
        ).first()
        if exists is None:
            session.execute(sa.insert(MARKS).values(job_id=job.job_id))
    time.sleep(0.005)
