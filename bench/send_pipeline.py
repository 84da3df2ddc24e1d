"""The message send pipeline against a local provider: an SMTP server (aiosmtpd) in this
process, two ``clinicbridge worker`` processes, a fresh SQLite database (or PostgreSQL
with ``--database-url``).

1. Throughput: ``--messages`` e-mails queued (``messaging.service.queue_message``, in
   batches, timed and reported on its own), then the two workers start; the rate is
   the messages over the span from the first to the last arrival at the provider.
   Target: >= 500 messages/s. Baseline in the same
   run: the same number of messages delivered straight to the same server with
   ``smtplib`` from one thread (what the provider alone can take).
2. Rate limit: an integration with ``rate_limit_per_second`` = 50 and ``--limited``
   messages; the server records when each one arrives. Target: no 1-second window
   holds more than 50.
Both check that every message arrived exactly once (by our Message-ID). Prints one
JSON object; exits 0 when every target is met.
"""

from __future__ import annotations

import argparse
import json
import os
import smtplib
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from _harness import free_port
from _jobs import (
    CLI,
    alive,
    clinicbridge_env,
    migrate,
    pg_database,
    processes,
    utcnow,
    wait_until,
)
from clinicbridge.core.context import Ctx
from clinicbridge.core.tenancy import create_tenant
from clinicbridge.db.engine import create_database
from clinicbridge.integrations.registry import integrations
from clinicbridge.integrations.schemas import IntegrationCreate
from clinicbridge.integrations.service import create_integration
from clinicbridge.messaging.models import Message
from clinicbridge.messaging.service import queue_message
from clinicbridge.patients.schemas import PatientCreate
from clinicbridge.patients.service import create_patient
from clinicbridge.vault.shared import shared_vault

TARGET_PER_S = 500.0
LIMIT_PER_S = 50
BATCH = 500


@dataclass
class Inbox:
    """What the local provider received: Message-ID and arrival time."""

    arrivals: list[tuple[str, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        message_id = ""
        for line in content.split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                message_id = line.split(b":", 1)[1].strip().decode()
                break
        with self.lock:
            self.arrivals.append((message_id, time.monotonic()))
        return "250 OK"

    def count(self) -> int:
        with self.lock:
            return len(self.arrivals)


def _ctx(tenant_id: str) -> Ctx:
    return Ctx(tenant_id, "system", "bench", "owner", frozenset(), utcnow())


def _setup(db: Any, key_file: Any, port: int, rate: int | None) -> tuple[str, str]:
    """A clinic with an smtp integration and one patient with an e-mail address."""
    with db.write() as session:
        tenant = create_tenant(
            session, name="Bench Clinic", now=utcnow(), timezone="America/Toronto", currency="CAD"
        )
        settings: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "from_email": "rdv@clinic.example",
        }
        if rate is not None:
            settings["rate_limit_per_second"] = rate
        create_integration(
            session,
            _ctx(tenant.id),
            shared_vault(db, key_file),
            integrations,
            IntegrationCreate(connector="smtp", name="Mail", credentials={}, settings=settings),
        )
        patient = create_patient(
            session,
            _ctx(tenant.id),
            PatientCreate(first_name="Alex", last_name="Sample", email="alex@example.com"),
            force=True,
        )
        return tenant.id, patient.id


def _queue(db: Any, tenant_id: str, patient_id: str, count: int) -> None:
    for start in range(0, count, BATCH):
        with db.write() as session:
            for i in range(start, min(count, start + BATCH)):
                queue_message(
                    session,
                    _ctx(tenant_id),
                    patient_id=patient_id,
                    channel="email",
                    subject=f"Reminder {i}",
                    body="See you soon.",
                )


def _sent(db: Any, tenant_id: str) -> int:
    with db.read() as session:
        stmt = (
            sa.select(sa.func.count())
            .select_from(Message)
            .where(Message.tenant_id == tenant_id, Message.status == "sent")
        )
        return int(session.scalar(stmt) or 0)


def _exactly_once(db: Any, tenant_id: str, inbox: Inbox, since: int) -> dict[str, int]:
    with db.read() as session:
        ours = set(session.scalars(sa.select(Message.id).where(Message.tenant_id == tenant_id)))
    received = Counter(mid.strip("<>").split("@")[0] for mid, _ in inbox.arrivals[since:])
    return {
        "messages": len(ours),
        "received": sum(received.values()),
        "duplicates": sum(n - 1 for n in received.values() if n > 1),
        "missing": len(ours - received.keys()),
    }


def _max_in_window(times: list[float], window: float = 1.0) -> int:
    times, best, lo = sorted(times), 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _cpu(procs: list[Any]) -> float:
    """CPU seconds (user + system) the processes have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in procs:
        fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def _baseline(port: int, count: int) -> float:
    """Straight smtplib delivery, one connection per message as the senders do."""
    start = time.perf_counter()
    for i in range(count):
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "rdv@clinic.example", "alex@example.com", f"b{i}"
        msg["Message-ID"] = f"<baseline-{i}@clinic.example>"
        msg.set_content("See you soon.")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.send_message(msg)
    return count / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--limited", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8, help="handler threads per worker")
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server's URL")
    args = parser.parse_args()
    if args.database_url == "postgresql":
        args.database_url = os.environ.get("CLINICBRIDGE_TEST_DATABASE_URL")
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
            url = f"sqlite:///{tmp}/bench.db"
            if args.database_url:
                url = stack.enter_context(pg_database(args.database_url, "send"))
            env = clinicbridge_env(url, tmp)
            migrate(env)
            db = create_database(url)
            key_file = Path(f"{tmp}/master.key")
            baseline = _baseline(port, min(args.messages, 1000))
            first = inbox.count()
            tenant, patient = _setup(db, key_file, port, None)
            limited_tenant, limited_patient = _setup(db, key_file, port, LIMIT_PER_S)
            start = time.perf_counter()
            _queue(db, tenant, patient, args.messages)
            queued_s = time.perf_counter() - start
            workers = [[*CLI, "worker", "--concurrency", str(args.concurrency)] for _ in range(2)]
            with processes(workers, env) as procs:
                wait_until(
                    lambda: alive(procs) and inbox.count() > first,
                    timeout=120,
                    what="the first message",
                    every=0.005,
                )  # the workers are up: their start-up is not the messages' cost
                cpu_before, server_before = _cpu(procs), time.process_time()
                # Wait on the provider's own count (no database polling competing with the
                # workers for the CPU), then for the database to say so too.
                wait_until(
                    lambda: alive(procs) and inbox.count() - first >= args.messages,
                    timeout=300,
                    what="every message received",
                    every=0.05,
                )
                wait_until(
                    lambda: _sent(db, tenant) >= args.messages,
                    timeout=60,
                    what="every message recorded sent",
                    every=0.1,
                )
                times = [t for _, t in inbox.arrivals[first:]]
                elapsed = max(times) - min(times)
                worker_cpu = _cpu(procs) - cpu_before
                # the local provider runs in this process, which otherwise mostly sleeps
                server_cpu = time.process_time() - server_before
                throughput = _exactly_once(db, tenant, inbox, first)
                second = inbox.count()
                _queue(db, limited_tenant, limited_patient, args.limited)
                wait_until(
                    lambda: alive(procs) and inbox.count() - second >= args.limited,
                    timeout=300,
                    what="every rate-limited message received",
                    every=0.05,
                )
                wait_until(
                    lambda: _sent(db, limited_tenant) >= args.limited,
                    timeout=60,
                    what="every rate-limited message recorded sent",
                    every=0.1,
                )
                limited = _exactly_once(db, limited_tenant, inbox, second)
                peak = _max_in_window([t for _, t in inbox.arrivals[second:]])
            db.dispose()
    finally:
        controller.stop()
    per_s = args.messages / elapsed
    clean = all(r["duplicates"] == 0 and r["missing"] == 0 for r in (throughput, limited))
    result = {
        "benchmark": "send_pipeline",
        "database": "postgresql" if args.database_url else "sqlite",
        "workers": 2,
        "messages": args.messages,
        "queueing_seconds": round(queued_s, 2),
        "sending_seconds": round(elapsed, 2),
        "messages_per_s": round(per_s, 1),
        "baseline_smtplib_per_s": round(baseline, 1),
        # Load-independent: what each message costs, whatever else the machine runs.
        "worker_cpu_ms_per_message": round(worker_cpu * 1000 / args.messages, 3),
        "provider_cpu_ms_per_message": round(server_cpu * 1000 / args.messages, 3),
        "target_per_s": TARGET_PER_S,
        "throughput_delivery": throughput,
        "rate_limit_per_s": LIMIT_PER_S,
        "rate_limited_messages": args.limited,
        "max_in_any_1s_window": peak,
        "rate_limited_delivery": limited,
        "pass": per_s >= TARGET_PER_S and peak <= LIMIT_PER_S and clean,
    }
    print(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
