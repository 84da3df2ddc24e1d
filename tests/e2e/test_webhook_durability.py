"""Webhooks survive SIGKILL of the server: each is stored once and processed once.

Sender threads post 5,000 Stripe-signed webhooks to the real server (``serve``
in a subprocess, embedded worker included): 4,500 distinct events and 500
duplicates, each of an event already answered 2xx. A request that got no
answer (or an error) is sent again, freshly signed, until it gets a 2xx, as a
provider would. Meanwhile the server is killed with SIGKILL twice, at random
moments, and restarted on the same database.

Afterwards every event is stored exactly once, its one processing job has
succeeded, its status is ``processed``, and the handler's idempotent mark exists
once. A duplicate of an acknowledged event is always answered as a duplicate:
a 2xx was only ever sent after a durable commit. Handler runs above one per
event happen only where a killed worker had claimed the job (its attempts say
so); their number is reported.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import stripe

from clinicbridge.db.engine import Database
from clinicbridge.jobs.models import Job
from clinicbridge.webhooks.models import WebhookEvent
from tests.conftest import Clinic, free_port
from tests.webhook_marks import MARKS, RUNS, create_tables

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TOTAL = 5000
DUPLICATES = TOTAL // 10
SENDERS = 16
KILLS = 2
WHSEC = "whsec_durabilityTestSecret0123456789ab"
STRIPE_KEY = "sk_test_51Durable0000000000000000"
SEND_DEADLINE_S = 150.0
PROCESS_DEADLINE_S = 90.0
REQUEST_TIMEOUT_S = 10.0


class ServerProcess:
    """``clinicbridge serve`` (through tests/webhook_serve.py) on a fixed port."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.webhook_serve", "serve", "--port", str(self.port)],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start; see {self.log}")
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@dataclass
class Ledger:
    """What the senders saw, shared between their threads."""

    slots: Iterator[bool]  # True: send a duplicate of an acknowledged event
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_event: int = 0
    acknowledged: list[str] = field(default_factory=list)  # distinct events answered 2xx
    answers: dict[str, dict[str, int]] = field(default_factory=dict)  # each event's 2xx
    duplicate_answers: list[dict[str, int]] = field(default_factory=list)
    done: int = 0
    attempts: int = 0
    no_answer: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[BaseException] = field(default_factory=list)

    def take(self, rng: random.Random) -> tuple[str, bool] | None:
        with self.lock:
            duplicate = next(self.slots, None)
            if duplicate is None:
                return None
            if duplicate and self.acknowledged:
                return rng.choice(self.acknowledged), True
            self.next_event += 1
            return f"evt_durable_{self.next_event:05d}", False


def _body(event_id: str, created: int) -> bytes:
    """The same body for every send of an event, as a provider's retries carry."""
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": "payment_intent.succeeded",
            "created": created,
            "data": {"object": {"id": f"pi_{event_id}", "amount": 4200}},
        }
    ).encode()


def _deliver(client: httpx.Client, path: str, body: bytes, ledger: Ledger, deadline: float) -> Any:
    """Send until a 2xx, signing each attempt afresh; the 2xx's JSON body."""
    pause = 0.02
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError("sending took too long")
        signature = stripe.WebhookSignature.generate_signature_header(
            body.decode(), WHSEC, timestamp=int(time.time())
        )
        headers = {"Stripe-Signature": str(signature), "Content-Type": "application/json"}
        with ledger.lock:
            ledger.attempts += 1
        try:
            response = client.post(path, content=body, headers=headers)
        except httpx.TransportError:
            with ledger.lock:
                ledger.no_answer += 1
        else:
            if 200 <= response.status_code < 300:
                return response.json()
            with ledger.lock:
                ledger.statuses[response.status_code] += 1
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


def _sender(
    url: str, path: str, ledger: Ledger, created: int, seed: int, deadline: float
) -> Callable[[], None]:
    def run() -> None:
        rng = random.Random(seed)
        try:
            with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
                while (slot := ledger.take(rng)) is not None:
                    event_id, duplicate = slot
                    answer = _deliver(client, path, _body(event_id, created), ledger, deadline)
                    with ledger.lock:
                        if duplicate:
                            ledger.duplicate_answers.append(answer)
                        else:
                            ledger.answers[event_id] = answer
                            ledger.acknowledged.append(event_id)
                        ledger.done += 1
        except BaseException as exc:
            with ledger.lock:
                ledger.errors.append(exc)

    return run


def _create_integration(url: str, clinic: Clinic) -> str:
    made = httpx.post(
        f"{url}/api/v1/integrations",
        headers=clinic.headers,
        json={
            "connector": "stripe",
            "name": "Stripe",
            "credentials": {
                "api_key": "sk_test_51Durable0000000000000000",
                "webhook_secret": WHSEC,
            },
            "settings": {},
        },
        timeout=10,
    )
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def _unfinished_jobs(db: Database) -> int:
    """Processing jobs still to run (a killed worker's wait for their lease to expire)."""
    with db.read() as session:
        return int(
            session.scalar(
                sa.select(sa.func.count()).where(
                    Job.kind == "webhooks.process", Job.state.in_(("pending", "running", "failed"))
                )
            )
            or 0
        )


def test_sigkill_during_ingest_loses_and_duplicates_nothing(
    db: Database, database_url: str, clinic: Clinic, tmp_path: Path
) -> None:
    create_tables(db.engine)
    env = {
        **os.environ,
        "CLINICBRIDGE_DATABASE_URL": database_url,
        "CLINICBRIDGE_MASTER_KEY_FILE": str(tmp_path / "master.key"),
        "CLINICBRIDGE_LOG_LEVEL": "WARNING",
        "CLINICBRIDGE_WORKER_HEARTBEAT_SECONDS": "0.5",
    }
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    duplicate_slots = set(rng.sample(range(200, TOTAL), DUPLICATES))
    ledger = Ledger(slots=iter([i in duplicate_slots for i in range(TOTAL)]))
    kill_after = sorted(rng.uniform(0.15 + 0.4 * k, 0.45 + 0.4 * k) for k in range(KILLS))
    server = ServerProcess(env, free_port(), tmp_path / "server.log")
    started = time.monotonic()
    senders: list[threading.Thread] = []
    try:
        server.start()
        integration_id = _create_integration(server.url, clinic)
        deadline = time.monotonic() + SEND_DEADLINE_S
        created = int(time.time())
        senders = [
            threading.Thread(
                target=_sender(
                    server.url, f"/webhooks/{integration_id}", ledger, created, seed + i, deadline
                ),
                daemon=True,
            )
            for i in range(SENDERS)
        ]
        for t in senders:
            t.start()
        for fraction in kill_after:
            while ledger.done < fraction * TOTAL:
                assert time.monotonic() < deadline and not ledger.errors, ledger.errors
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.05))
            assert ledger.done < TOTAL, "the senders finished before a kill"
            server.kill()
            server.start()
        for t in senders:
            t.join(max(0.0, deadline - time.monotonic()))
        assert not ledger.errors, ledger.errors
        assert ledger.done == TOTAL
        sent_at = time.monotonic()
        distinct = set(ledger.answers)
        processing_deadline = time.monotonic() + PROCESS_DEADLINE_S
        while unfinished := _unfinished_jobs(db):  # events and jobs are committed together
            assert time.monotonic() < processing_deadline, f"{unfinished} jobs still to run"
            assert server.alive(), "the server exited"
            time.sleep(0.2)
        processed_at = time.monotonic()
    finally:
        server.stop()

    with db.read() as session:
        stored = session.execute(
            sa.select(
                WebhookEvent.id,
                WebhookEvent.provider_event_id,
                WebhookEvent.status,
                WebhookEvent.attempts,
            ).where(WebhookEvent.integration_id == integration_id)
        ).all()
        jobs = session.execute(
            sa.select(Job.payload, Job.state, Job.attempts).where(Job.kind == "webhooks.process")
        ).all()
        marks = session.execute(sa.select(MARKS.c.provider_event_id)).scalars().all()
        runs = Counter(session.execute(sa.select(RUNS.c.provider_event_id)).scalars())

    # Stored exactly once, and nothing that was not sent.
    copies = Counter(row.provider_event_id for row in stored)
    lost = distinct - set(copies)
    assert not lost, f"{len(lost)} events answered 2xx are not stored"
    assert set(copies) == distinct and set(copies.values()) == {1}
    # Processed exactly once: one job each, succeeded; status processed; one mark.
    job_of = {job.payload["event_id"]: job for job in jobs}
    assert len(jobs) == len(job_of) == len(stored)
    assert {job.state for job in jobs} == {"succeeded"}
    assert {row.status for row in stored} == {"processed"}
    assert len(marks) == len(set(marks)) and set(marks) == distinct
    # A handler ran again only for a job that a killed worker had claimed.
    assert set(runs) == distinct
    attempts = {row.provider_event_id: job_of[row.id].attempts for row in stored}
    assert all(runs[e] <= attempts[e] for e in distinct)
    # A 2xx meant a durable commit: no acknowledged event was ever taken for a new one.
    assert all(a == {"received": 0, "duplicates": 1} for a in ledger.duplicate_answers)
    assert len(ledger.duplicate_answers) == TOTAL - len(distinct)
    assert not [s for s in ledger.statuses if 400 <= s < 500], ledger.statuses
    summary = {
        "database": db.dialect,
        "seed": seed,
        "kills": KILLS,
        "webhooks": TOTAL,
        "distinct_events": len(distinct),
        "duplicates_sent": len(ledger.duplicate_answers),
        "attempts": ledger.attempts,
        "attempts_without_answer": ledger.no_answer,
        "non_2xx_answers": dict(ledger.statuses),
        # stored by an attempt whose answer was lost to a kill; the retry was a duplicate
        "stored_before_answer_lost": sum(1 for a in ledger.answers.values() if a["received"] == 0),
        "handler_reruns": sum(n - 1 for n in runs.values()),
        "events_run_more_than_once": sum(1 for n in runs.values() if n > 1),
        "send_seconds": round(sent_at - started, 1),
        "all_processed_seconds": round(processed_at - started, 1),
    }
    print(f"\nwebhook durability: {json.dumps(summary)}")
