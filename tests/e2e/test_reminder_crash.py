"""Reminders survive SIGKILL of the worker: no patient gets a reminder twice.

1,000 patients, each with one booking and two reminders due now: 2,000 reminders.
A real ``clinicbridge worker`` (8 handler threads) turns them into e-mails sent to a
local SMTP server (aiosmtpd, the fake provider), which records each delivered
Message-ID. The worker is killed with SIGKILL after about a third of the messages
arrived and again after about two thirds, and restarted each time on the same
database; the killed worker's jobs are reclaimed when their 2-second leases expire.

What is asserted, precisely:

* every reminder produced exactly one message row (the reminder's dedupe key), and
  every reminder row is ``sent`` pointing at its message;
* no Message-ID was delivered twice: no patient received any reminder twice;
* every message is ``sent`` or ``unknown``; each ``sent`` one was delivered exactly
  once, and each delivered one is ``sent`` or ``unknown``;
* ``unknown`` marks a send a kill cut short after it was marked ``sending``: SMTP
  cannot be asked whether it arrived, so it is never resent (README, "Exactly once,
  per provider"). It may have been delivered (once) or not at all. At most one send
  per handler thread is in flight at a kill, so there are at most
  ``CONCURRENCY * KILLS`` of them.

So each patient received at most one message per reminder, and exactly one for every
reminder whose message is ``sent``: all but the (few, counted) ``unknown`` ones.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from fastapi.testclient import TestClient

from clinicbridge.core.ids import new_id
from clinicbridge.db.engine import Database
from clinicbridge.jobs.models import Job
from clinicbridge.messaging import reminder_rules, reminders
from clinicbridge.messaging.models import Message
from clinicbridge.messaging.reminder_models import BookingReminder
from clinicbridge.messaging.service import SEND_KIND
from clinicbridge.patients.models import Patient, PatientContact
from clinicbridge.patients.normalize import fold, name_key
from clinicbridge.scheduling.models import Booking, TimeClaim
from tests.conftest import Clinic, free_port
from tests.integration.test_messages import _email_integration
from tests.integration.test_reminders import _setup

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BOOKINGS = 1000
OFFSETS = (30 * 24 * 60, 25 * 24 * 60)  # 30 and 25 days before: every one is due already
REMINDERS = BOOKINGS * len(OFFSETS)
CONCURRENCY = 8
KILLS = 2
DEADLINE_S = 120.0
UNFINISHED = ("pending", "running", "failed")


@dataclass
class Sink:
    """The fake provider: every Message-ID the SMTP server accepted, in order."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    message_ids: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        headers = BytesHeaderParser().parsebytes(envelope.original_content or b"")
        with self.lock:
            self.message_ids.append(str(headers["Message-ID"]))
        return "250 Message accepted"

    def count(self) -> int:
        with self.lock:
            return len(self.message_ids)


@pytest.fixture
def smtp_sink() -> Iterator[tuple[int, Sink]]:
    sink, port = Sink(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, server_hostname="mail.test")
    controller.start()
    yield port, sink
    controller.stop()


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "clinicbridge.cli",
                "worker",
                "--lease-seconds",
                "2",
                "--concurrency",
                str(CONCURRENCY),
            ],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _make_bookings(db: Database, clinic: Clinic, provider: str, service: str) -> None:
    """A patient (with an e-mail) and a booking per patient, 30 minutes apart from two
    hours from now: direct inserts, a few hundred milliseconds."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    first = now + timedelta(hours=2)
    patients: list[dict[str, Any]] = []
    contacts: list[dict[str, Any]] = []
    claims: list[dict[str, Any]] = []
    bookings: list[dict[str, Any]] = []
    for i in range(BOOKINGS):
        patient, claim = new_id("pat"), new_id("clm")
        last = f"Sample{i:04d}"
        patients.append(
            {
                "id": patient,
                "tenant_id": clinic.id,
                "first_name": "Quinn",
                "last_name": last,
                "first_norm": fold("Quinn"),
                "last_norm": fold(last),
                "name_key": name_key(last),
                "date_of_birth": date(1980, 1, 1) + timedelta(days=i),
                "created_by": "test",
                "created_at": now,
                "updated_at": now,
            }
        )
        contacts.append(
            {
                "id": new_id("pct"),
                "tenant_id": clinic.id,
                "patient_id": patient,
                "kind": "email",
                "value": f"patient{i:04d}@example.com",
                "is_primary": True,
            }
        )
        start = first + timedelta(minutes=30 * i)
        end = start + timedelta(minutes=30)
        claims.append(
            {
                "id": claim,
                "tenant_id": clinic.id,
                "provider_id": provider,
                "service_id": service,
                "starts_at": start,
                "ends_at": end,
                "blocked_from": start,
                "blocked_until": end,
                "capacity": 1,
                "seats_taken": 1,
                "active": True,
            }
        )
        bookings.append(
            {
                "id": new_id("bkg"),
                "tenant_id": clinic.id,
                "claim_id": claim,
                "service_id": service,
                "provider_id": provider,
                "location_id": None,
                "patient_id": patient,
                "status": "booked",
                "starts_at": start,
                "ends_at": end,
                "confirmation_code": f"RC{i:06d}",
                "source": "api",
                "version": 1,
                "created_by": "test",
                "created_at": now,
                "updated_at": now,
            }
        )
    with db.write() as session:
        conn = session.connection()
        conn.execute(sa.insert(Patient), patients)
        conn.execute(sa.insert(PatientContact), contacts)
        conn.execute(sa.insert(TimeClaim), claims)
        conn.execute(sa.insert(Booking), bookings)


def _unfinished(db: Database) -> int:
    with db.read() as session:
        return int(
            session.scalar(
                sa.select(sa.func.count()).where(
                    Job.kind.in_((reminders.REMINDER_KIND, SEND_KIND)),
                    Job.state.in_(UNFINISHED),
                )
            )
            or 0
        )


def test_sigkill_during_reminders_sends_none_twice(
    client: TestClient,
    clinic: Clinic,
    db: Database,
    database_url: str,
    tmp_path: Path,
    smtp_sink: tuple[int, Sink],
) -> None:
    port, sink = smtp_sink
    started = time.monotonic()
    _email_integration(client, clinic, port)
    provider, service, _ = _setup(client, clinic)
    now = datetime.now(UTC)
    with db.write() as session:  # e-mail only, no quiet hours: all due now, whatever the hour
        reminder_rules.set_rule(
            session,
            clinic.id,
            now=now,
            offsets=OFFSETS,
            channels=("email",),
            quiet_start=0,
            quiet_end=0,
        )
    _make_bookings(db, clinic, provider, service)
    # Planned as if a month ago, so none is skipped as "due before the booking was made".
    planned = reminders.schedule_upcoming(db, now=now - timedelta(days=31), tenant_id=clinic.id)
    assert planned == REMINDERS
    setup_s = time.monotonic() - started

    env = {
        **os.environ,
        "CLINICBRIDGE_DATABASE_URL": database_url,
        "CLINICBRIDGE_MASTER_KEY_FILE": str(tmp_path / "master.key"),
        "CLINICBRIDGE_LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "worker.log"
    sending_started = time.monotonic()
    deadline = sending_started + DEADLINE_S
    proc = _start_worker(env, log)
    kills_at: list[int] = []
    try:
        for k in range(1, KILLS + 1):
            while sink.count() < k * REMINDERS // (KILLS + 1):
                assert time.monotonic() < deadline, f"only {sink.count()} delivered; see {log}"
                assert proc.poll() is None, f"the worker exited; see {log}"
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills_at.append(sink.count())
            assert kills_at[-1] < REMINDERS, "everything was sent before a kill"
            proc = _start_worker(env, log)
        while unfinished := _unfinished(db):
            assert time.monotonic() < deadline, f"{unfinished} jobs still to run; see {log}"
            assert proc.poll() is None, f"the worker exited; see {log}"
            time.sleep(0.2)
        done_s = time.monotonic() - sending_started
    finally:
        _stop(proc)

    with db.read() as session:
        rows = session.execute(
            sa.select(
                BookingReminder.booking_id,
                BookingReminder.offset_minutes,
                BookingReminder.status,
                BookingReminder.message_id,
            ).where(BookingReminder.tenant_id == clinic.id)
        ).all()
        messages = session.execute(
            sa.select(Message.id, Message.status, Message.dedupe_key, Message.patient_id).where(
                Message.tenant_id == clinic.id
            )
        ).all()
        job_states = Counter(
            session.execute(
                sa.select(Job.state).where(Job.kind.in_((reminders.REMINDER_KIND, SEND_KIND)))
            ).scalars()
        )

    # Every reminder produced exactly one message (its dedupe key), and says so.
    assert len(rows) == REMINDERS
    assert {r.status for r in rows} == {"sent"}, Counter(r.status for r in rows)
    assert len(messages) == REMINDERS
    assert len({m.dedupe_key for m in messages}) == REMINDERS
    assert {r.message_id for r in rows} == {m.id for m in messages}
    assert set(job_states) <= {"succeeded"}, job_states  # none dead, none left to run
    # Delivered: never twice, only messages we made, and as their status says.
    delivered = Counter(mid.strip("<>").partition("@")[0] for mid in sink.message_ids)
    duplicates = {mid: n for mid, n in delivered.items() if n > 1}
    assert not duplicates, f"delivered more than once: {duplicates}"
    status = {m.id: m.status for m in messages}
    assert set(delivered) <= set(status), "a delivered message that is not ours"
    assert set(status.values()) <= {"sent", "unknown"}, Counter(status.values())
    sent = {mid for mid, s in status.items() if s == "sent"}
    unknown = {mid for mid, s in status.items() if s == "unknown"}
    assert sent <= set(delivered), f"{len(sent - set(delivered))} 'sent' never arrived"
    assert len(unknown) <= CONCURRENCY * KILLS, f"{len(unknown)} unknown"
    # Each patient: one message per reminder at most; exactly one unless unknown.
    per_patient = Counter(m.patient_id for m in messages if m.id in delivered)
    assert max(per_patient.values()) <= len(OFFSETS)
    summary = {
        "database": db.dialect,
        "reminders": REMINDERS,
        "kills_at_delivered": kills_at,
        "delivered": len(sink.message_ids),
        "sent": len(sent),
        "unknown": len(unknown),
        "unknown_delivered": len(unknown & set(delivered)),
        "duplicates": len(duplicates),
        "setup_seconds": round(setup_s, 1),
        "send_seconds": round(done_s, 1),
    }
    print(f"\nreminder crash: {json.dumps(summary)}")
