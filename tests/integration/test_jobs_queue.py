"""The queue's SQL: transactional enqueue, dedupe, claim, outcomes, leases, admin actions."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from clinicbridge.core.clock import SystemClock
from clinicbridge.core.errors import ConflictError, NotFoundError
from clinicbridge.db.engine import Database
from clinicbridge.jobs import queue as q
from clinicbridge.jobs.models import Job
from tests.conftest import Clinic

NOW = SystemClock().now


def _state(db: Database, job_id: str) -> Job:
    with db.read() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_enqueue_rolls_back_with_the_business_write(db: Database) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), db.write() as session:
        q.enqueue(session, "reminder.send", {"booking": "bkg_1"}, now=NOW())
        raise Boom
    with db.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Job)) == 0


def test_dedupe_key_returns_the_waiting_job(db: Database) -> None:
    with db.write() as session:
        first = q.enqueue(session, "sync", now=NOW(), dedupe_key="sync:cal_1")
        again = q.enqueue(session, "sync", now=NOW(), dedupe_key="sync:cal_1")
    assert first.created and not again.created and again.id == first.id
    [claimed] = q.claim(
        db, worker_id="wrk_a", queues=["default"], limit=10, lease=timedelta(seconds=30), now=NOW()
    )
    with db.write() as session:  # still running: deduped
        assert q.enqueue(session, "sync", now=NOW(), dedupe_key="sync:cal_1").id == first.id
    q.record_outcomes(db, "wrk_a", [q.Outcome(claimed.id, "succeeded")], NOW())
    with db.write() as session:  # finished: a new run is a new job
        third = q.enqueue(session, "sync", now=NOW(), dedupe_key="sync:cal_1")
    assert third.created and third.id != first.id


def test_concurrent_dedupe_creates_one_job(db: Database) -> None:
    barrier = threading.Barrier(8)
    ids: list[str] = []

    def enqueue() -> None:
        barrier.wait()
        with db.write() as session:
            ids.append(q.enqueue(session, "sync", now=NOW(), dedupe_key="sync:race").id)

    threads = [threading.Thread(target=enqueue) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 8 and len(set(ids)) == 1
    with db.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Job)) == 1


def test_claim_takes_due_jobs_oldest_first_and_only_once(db: Database) -> None:
    now = NOW()
    with db.write() as session:
        later = q.enqueue(session, "k", now=now, run_at=now + timedelta(hours=1)).id
        old = q.enqueue(session, "k", now=now, run_at=now - timedelta(minutes=5)).id
        new = q.enqueue(session, "k", now=now).id
        q.enqueue(session, "k", now=now, queue="other")
    lease = timedelta(seconds=30)
    first = q.claim(db, worker_id="wrk_a", queues=["default"], limit=1, lease=lease, now=now)
    rest = q.claim(db, worker_id="wrk_b", queues=["default"], limit=10, lease=lease, now=now)
    assert [j.id for j in first] == [old] and [j.id for j in rest] == [new]
    assert first[0].attempt == 1
    assert later not in {j.id for j in first + rest}
    assert _state(db, old).locked_by == "wrk_a" and _state(db, old).state == "running"


def test_outcomes_only_apply_to_the_current_lease(db: Database) -> None:
    with db.write() as session:
        job_id = q.enqueue(session, "k", now=NOW()).id
    q.claim(db, worker_id="wrk_a", queues=["default"], limit=1, lease=timedelta(0), now=NOW())
    assert q.reclaim_expired(db, NOW() + timedelta(seconds=1)) == 1
    assert _state(db, job_id).state == "failed"
    [again] = q.claim(
        db,
        worker_id="wrk_b",
        queues=["default"],
        limit=1,
        lease=timedelta(seconds=30),
        now=NOW() + timedelta(seconds=2),
    )
    assert again.attempt == 2
    # the vanished worker comes back and reports: ignored
    assert q.record_outcomes(db, "wrk_a", [q.Outcome(job_id, "succeeded")], NOW()) == 0
    assert q.record_outcomes(db, "wrk_b", [q.Outcome(job_id, "succeeded")], NOW()) == 1
    assert _state(db, job_id).state == "succeeded"


def test_expired_lease_on_the_last_attempt_is_dead(db: Database) -> None:
    with db.write() as session:
        job_id = q.enqueue(session, "k", now=NOW(), max_attempts=1).id
    q.claim(db, worker_id="wrk_a", queues=["default"], limit=1, lease=timedelta(0), now=NOW())
    q.reclaim_expired(db, NOW() + timedelta(seconds=1))
    job = _state(db, job_id)
    assert job.state == "dead" and job.last_error is not None
    assert job.last_error.startswith("LeaseExpired")


def test_release_refunds_the_attempt(db: Database) -> None:
    with db.write() as session:
        job_id = q.enqueue(session, "k", now=NOW()).id
    q.claim(
        db, worker_id="wrk_a", queues=["default"], limit=1, lease=timedelta(seconds=30), now=NOW()
    )
    q.release(db, "wrk_a", [job_id], NOW())
    job = _state(db, job_id)
    assert (job.state, job.attempts, job.locked_by) == ("pending", 0, None)


def test_retry_cancel_purge(db: Database, clinic: Clinic) -> None:
    now = NOW()
    with db.write() as session:
        dead = q.enqueue(session, "k", now=now, tenant_id=clinic.id).id
        waiting = q.enqueue(
            session, "k", now=now + timedelta(hours=1), run_at=now + timedelta(hours=1)
        ).id
    q.claim(db, worker_id="w", queues=["default"], limit=1, lease=timedelta(seconds=30), now=now)
    q.record_outcomes(db, "w", [q.Outcome(dead, "dead", error="Boom")], now)
    with db.write() as session:
        with pytest.raises(NotFoundError):
            q.retry_job(session, dead, now, tenant_id="ten_" + "0" * 26)
        job = q.retry_job(session, dead, now, tenant_id=clinic.id)
        assert (job.state, job.attempts) == ("pending", 0)
        with pytest.raises(ConflictError):
            q.retry_job(session, dead, now)
        assert q.cancel_job(session, waiting, now).state == "cancelled"
        with pytest.raises(ConflictError):
            q.cancel_job(session, waiting, now)
    with db.write() as session:
        assert q.purge(session, now + timedelta(seconds=1), states=("cancelled",)) == 1
        assert q.purge(session, now + timedelta(seconds=1), states=("cancelled",)) == 0


def test_enqueue_many(db: Database) -> None:
    jobs = [q.NewJob("reminder.send", {"n": i}) for i in range(1000)]
    jobs.append(q.NewJob("reminder.send", {"n": "x"}, dedupe_key="one"))
    jobs.append(q.NewJob("reminder.send", {"n": "y"}, dedupe_key="one"))
    with db.write() as session:
        q.enqueue_many(session, jobs, now=NOW())
    with db.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Job)) == 1001
