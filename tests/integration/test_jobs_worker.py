"""The worker: running handlers, retries, dead jobs, leases, shutdown, periodic tasks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from clinicbridge.core.clock import FakeClock, SystemClock
from clinicbridge.core.errors import CircuitOpenError, PermanentJobError, RetryAfter
from clinicbridge.db.engine import Database
from clinicbridge.jobs import queue as q
from clinicbridge.jobs.models import Job
from clinicbridge.jobs.periodic import PeriodicScheduler
from clinicbridge.jobs.registry import JobContext, JobRegistry, PeriodicTask
from clinicbridge.jobs.retry import backoff_cap, fixed
from clinicbridge.jobs.worker import Worker, WorkerConfig
from tests.conftest import Clinic

FAST = WorkerConfig(heartbeat_seconds=0.2, lease=timedelta(seconds=30), shutdown_timeout=2)


@pytest.fixture
def jobs() -> JobRegistry:
    return JobRegistry()


@pytest.fixture
def start_worker(db: Database, jobs: JobRegistry) -> Iterator[Callable[..., Worker]]:
    started: list[tuple[Worker, threading.Thread]] = []

    def start(config: WorkerConfig = FAST, clock: object = None) -> Worker:
        worker = Worker(db, clock or SystemClock(), jobs=jobs, config=config)  # type: ignore[arg-type]
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        started.append((worker, thread))
        return worker

    yield start
    for worker, thread in started:
        worker.stop()
        thread.join(10)


def enqueue(db: Database, kind: str, payload: dict | None = None, **kw: object) -> str:  # type: ignore[type-arg]
    with db.write() as session:
        return q.enqueue(session, kind, payload or {}, now=SystemClock().now(), **kw).id  # type: ignore[arg-type]


def wait_for(db: Database, job_id: str, states: set[str], timeout: float = 10) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        with db.read() as session:
            job = session.get(Job, job_id)
            assert job is not None
            if job.state in states:
                return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job stayed {job.state}, wanted {states}")
        time.sleep(0.02)


def test_handlers_run_with_their_attempt_number(
    db: Database, jobs: JobRegistry, start_worker: Callable[..., Worker], clinic: Clinic
) -> None:
    seen: list[tuple[str, int, str | None, dict]] = []  # type: ignore[type-arg]
    jobs.register(
        "note", lambda job: seen.append((job.kind, job.attempt, job.tenant_id, job.payload))
    )
    start_worker()
    job_id = enqueue(db, "note", {"text": "hello"}, tenant_id=clinic.id)
    job = wait_for(db, job_id, {"succeeded"})
    assert seen == [("note", 1, clinic.id, {"text": "hello"})]
    assert job.finished_at is not None and job.locked_by is None


def test_failures_retry_with_backoff_then_die(
    db: Database, jobs: JobRegistry, start_worker: Callable[..., Worker]
) -> None:
    attempts: list[int] = []

    def flaky(job: JobContext) -> None:
        attempts.append(job.attempt)
        raise ValueError("patient Jane Q. said no")  # foreign message: never stored

    jobs.register("flaky", flaky, backoff=fixed(timedelta(0)))
    start_worker()
    job = wait_for(db, enqueue(db, "flaky", max_attempts=3), {"dead"})
    assert attempts == [1, 2, 3]
    assert job.attempts == 3 and job.last_error == "ValueError"


def test_default_backoff_reaches_about_three_days() -> None:
    total = sum(backoff_cap(n).total_seconds() for n in range(1, 12))
    assert 2.5 * 86400 <= total <= 3.5 * 86400
    assert backoff_cap(1) == timedelta(minutes=2)


def test_failed_job_waits_for_its_backoff(
    db: Database, jobs: JobRegistry, start_worker: Callable[..., Worker]
) -> None:
    def fail(job: JobContext) -> None:
        raise ValueError

    jobs.register("fail", fail, backoff=fixed(timedelta(hours=1)))
    start_worker()
    before = SystemClock().now()
    job = wait_for(db, enqueue(db, "fail"), {"failed"})
    assert job.attempts == 1
    assert timedelta(minutes=59) < job.run_at - before < timedelta(minutes=61)


def test_retry_after_and_permanent_errors(
    db: Database, jobs: JobRegistry, start_worker: Callable[..., Worker]
) -> None:
    def later(job: JobContext) -> None:
        raise RetryAfter(600)

    def never(job: JobContext) -> None:
        raise PermanentJobError("the clinic deleted this calendar")

    jobs.register("later", later)
    jobs.register("never", never)
    start_worker()
    before = SystemClock().now()
    delayed = wait_for(db, enqueue(db, "later"), {"failed"})
    assert timedelta(seconds=590) < delayed.run_at - before < timedelta(seconds=620)
    dead = wait_for(db, enqueue(db, "never"), {"dead"})
    assert dead.attempts == 1
    assert dead.last_error == "PermanentJobError: the clinic deleted this calendar"


def test_open_circuit_reschedules_without_burning_an_attempt(
    db: Database, jobs: JobRegistry, start_worker: Callable[..., Worker]
) -> None:
    def outage(job: JobContext) -> None:
        raise CircuitOpenError("Stripe is failing", integration="stripe", retry_after=45)

    jobs.register("charge", outage)
    start_worker()
    before = SystemClock().now()
    job_id = enqueue(db, "charge", max_attempts=1)
    deadline = time.monotonic() + 10
    while True:
        with db.read() as session:
            job = session.get(Job, job_id)
            assert job is not None
            if job.last_error:
                break
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert job.state == "pending" and job.attempts == 0
    assert timedelta(seconds=40) < job.run_at - before < timedelta(seconds=60)


def test_unknown_kind_is_dead(db: Database, start_worker: Callable[..., Worker]) -> None:
    start_worker()
    job = wait_for(db, enqueue(db, "no.such.kind"), {"dead"})
    assert job.last_error == "UnknownKind: no handler for 'no.such.kind'"


def test_lost_worker_job_is_run_again(
    db: Database, jobs: JobRegistry, start_worker: Callable[..., Worker]
) -> None:
    runs: list[int] = []
    jobs.register("k", lambda job: runs.append(job.attempt))
    job_id = enqueue(db, "k")
    # a worker that claimed it and died (its lease is already over)
    q.claim(
        db,
        worker_id="wrk_ghost",
        queues=["default"],
        limit=1,
        lease=timedelta(milliseconds=1),
        now=SystemClock().now(),
    )
    start_worker(WorkerConfig(heartbeat_seconds=0.2, lease=timedelta(seconds=2)))
    wait_for(db, job_id, {"succeeded"})
    assert runs == [2]


def test_long_job_keeps_its_lease(
    db: Database, jobs: JobRegistry, start_worker: Callable[..., Worker]
) -> None:
    runs: list[int] = []

    def slow(job: JobContext) -> None:
        runs.append(job.attempt)
        time.sleep(2.5)

    jobs.register("slow", slow)
    config = WorkerConfig(heartbeat_seconds=0.2, lease=timedelta(seconds=1))
    start_worker(config)
    start_worker(config)  # a second worker would steal it if the lease lapsed
    wait_for(db, enqueue(db, "slow"), {"succeeded"})
    assert runs == [1]


def test_graceful_shutdown_gives_back_unfinished_jobs(db: Database, jobs: JobRegistry) -> None:
    started = threading.Event()

    def slow(job: JobContext) -> None:
        started.set()
        time.sleep(3)

    jobs.register("slow", slow)
    worker = Worker(
        db,
        SystemClock(),
        jobs=jobs,
        config=WorkerConfig(heartbeat_seconds=0.2, shutdown_timeout=0.3),
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    job_id = enqueue(db, "slow")
    assert started.wait(5)
    worker.stop()
    thread.join(5)
    assert not thread.is_alive()
    with db.read() as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert (job.state, job.attempts, job.locked_by) == ("pending", 0, None)


def test_graceful_shutdown_finishes_quick_jobs(db: Database, jobs: JobRegistry) -> None:
    jobs.register("quick", lambda job: time.sleep(0.3))
    worker = Worker(db, SystemClock(), jobs=jobs, config=FAST)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    job_id = enqueue(db, "quick")
    wait_for(db, job_id, {"running"})
    worker.stop()
    thread.join(5)
    assert wait_for(db, job_id, {"succeeded"}, timeout=0.1).attempts == 1


def test_many_jobs_across_two_workers_each_run_once(
    db: Database, jobs: JobRegistry, start_worker: Callable[..., Worker]
) -> None:
    counts: dict[int, int] = {}
    lock = threading.Lock()

    def count(job: JobContext) -> None:
        with lock:
            counts[job.payload["n"]] = counts.get(job.payload["n"], 0) + 1

    jobs.register("count", count)
    with db.write() as session:
        q.enqueue_many(
            session, [q.NewJob("count", {"n": i}) for i in range(500)], now=SystemClock().now()
        )
    start_worker()
    start_worker()
    deadline = time.monotonic() + 30
    while True:
        with db.read() as session:
            left = session.scalar(
                sa.select(sa.func.count()).select_from(Job).where(Job.state != "succeeded")
            )
        if not left:
            break
        assert time.monotonic() < deadline, f"{left} jobs left"
        time.sleep(0.05)
    assert counts == dict.fromkeys(range(500), 1)


def test_periodic_task_runs_once_per_tick_across_three_workers(
    db: Database, clinic: Clinic, make_clinic: Callable[..., Clinic]
) -> None:
    other = make_clinic("Birch Dental")
    tasks = [
        PeriodicTask("cleanup", "*/5 * * * *", "cleanup"),
        PeriodicTask("digest", "0 * * * *", "digest", per_tenant=True),
    ]
    clock = FakeClock(datetime(2026, 3, 8, 9, 58, tzinfo=UTC))
    schedulers = [PeriodicScheduler(tasks, db, clock) for _ in range(3)]

    def tick_all() -> None:
        barrier = threading.Barrier(3)

        def run(s: PeriodicScheduler) -> None:
            barrier.wait()
            s.run_due()

        threads = [threading.Thread(target=run, args=(s,)) for s in schedulers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    tick_all()  # 09:58: the latest ticks were 09:55 (cleanup) and 09:00 (digest)
    clock.advance(timedelta(minutes=1))
    tick_all()  # 09:59: nothing new
    clock.advance(timedelta(minutes=2))
    tick_all()  # 10:01: cleanup 10:00 and digest 10:00
    with db.read() as session:
        rows = session.execute(sa.select(Job.kind, Job.tenant_id, Job.payload)).all()
    ticks = sorted((r.kind, r.tenant_id or "", r.payload["tick"]) for r in rows)
    assert ticks == sorted(
        [
            ("cleanup", "", "2026-03-08T09:55:00+00:00"),
            ("cleanup", "", "2026-03-08T10:00:00+00:00"),
            ("digest", clinic.id, "2026-03-08T09:00:00+00:00"),
            ("digest", other.id, "2026-03-08T09:00:00+00:00"),
            ("digest", clinic.id, "2026-03-08T10:00:00+00:00"),
            ("digest", other.id, "2026-03-08T10:00:00+00:00"),
        ]
    )


def test_registry_refuses_bad_definitions() -> None:
    registry = JobRegistry()
    registry.register("a", lambda job: None)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a", lambda job: None)
    with pytest.raises(ValueError, match="invalid cron"):
        registry.periodic(PeriodicTask("x", "every day", "a"))
