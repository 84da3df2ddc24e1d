"""``payment_intent.succeeded`` received → booking confirmed and receipt job enqueued.

One server process with its embedded worker on a fresh database (SQLite; ``--database-url
postgresql`` for ``$CLINICBRIDGE_TEST_DATABASE_URL``), its Stripe integration pointed
at the fake Stripe (``clinicbridge.testing.stripe``) served by this process. Bookings
with payment are made through ``POST /api/v1/bookings`` (each creates its
PaymentIntent at the fake), the patients "pay" at the fake, and the resulting
``payment_intent.succeeded`` events, signed with the official ``stripe`` package, are
sent open loop at ``--rate`` per second (default 100).

Each phase starts once the jobs the previous one left (the bookings' messages and
reminders) are done. Measured per event, from the server's own clocks: from the inbox
storing the event (``webhook_events.received_at``) to the later of the booking's
confirmation and the receipt job's creation (both written in the handler's transaction).
Target: p95 <= 50 ms. Baseline, same server, same rate, same open-loop sender:
``/bench/hello`` answer latency (reported with the webhooks' own answer latency). Prints
one JSON object; exits non-zero when the target fails or any event is not processed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa
import stripe

from _harness import ROOT
from _webhooks import STRIPE_KEY, WHSEC, hello_requests, open_loop, percentile, webhook_server
from clinicbridge.db.engine import create_database
from clinicbridge.jobs.models import Job
from clinicbridge.payments.lifecycle import RECEIPT_KIND
from clinicbridge.payments.models import Payment
from clinicbridge.scheduling.models import Booking
from clinicbridge.testing.stripe import FakeStripe
from clinicbridge.webhooks.models import WebhookEvent

TARGET_P95_MS = 50.0
CLI = [sys.executable, "-m", "clinicbridge.cli"]


def _setup(client: httpx.Client, headers: dict[str, str], integration: str, fake_url: str) -> str:
    client.patch(
        f"/api/v1/integrations/{integration}",
        headers=headers,
        json={"settings": {"api_base": fake_url, "currency": "USD"}},
    ).raise_for_status()
    loc = client.post(
        "/api/v1/locations", headers=headers, json={"name": "Main", "timezone": "UTC"}
    ).json()["id"]
    prv = client.post(
        "/api/v1/providers", headers=headers, json={"display_name": "Dr. Bench", "timezone": "UTC"}
    ).json()["id"]
    hours = [{"weekday": d, "start": "00:00", "end": "24:00", "location_id": loc} for d in range(7)]
    client.put(
        f"/api/v1/providers/{prv}/hours", headers=headers, json={"intervals": hours}
    ).raise_for_status()
    svc = client.post(
        "/api/v1/services",
        headers=headers,
        json={
            "name": "Check-up",
            "duration_minutes": 5,
            "provider_ids": [prv],
            "price_minor": 5000,
            "currency": "USD",
            "deposit_minor": 1500,
        },
    ).json()["id"]
    return f"{svc}|{prv}"


def _book(client: httpx.Client, headers: dict[str, str], ids: str, n: int) -> list[str]:
    svc, prv = ids.split("|")
    first = (datetime.now(UTC) + timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    intents = []
    for i in range(n):
        body = {
            "service_id": svc,
            "provider_id": prv,
            "start": (first + timedelta(minutes=5 * i)).isoformat(),
            "patient": {
                "first_name": f"Pat{i}",
                "last_name": "Bench",
                "date_of_birth": "1980-01-01",
            },
            "payment": "deposit",
            "hold_minutes": 60,
        }
        made = client.post("/api/v1/bookings", headers=headers, json=body)
        made.raise_for_status()
        intents.append(made.json()["payment"]["stripe_payment_intent_id"])
    return intents


@contextmanager
def _worker_processes(count: int, env: dict[str, str]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``clinicbridge worker`` processes on the server's database, stopped on the way out."""
    procs = [subprocess.Popen([*CLI, "worker"], env=env, cwd=ROOT) for _ in range(count)]
    try:
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def _cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _idle(url: str, timeout: float = 300.0) -> float:
    """Wait until no job due now is left (the bookings' own jobs, say); seconds waited."""
    db = create_database(url)
    started = time.monotonic()
    try:
        while True:
            with db.read() as session:
                left = session.scalar(
                    sa.select(sa.func.count())
                    .select_from(Job)
                    .where(
                        Job.state.in_(("pending", "running", "failed")),
                        Job.run_at <= datetime.now(UTC),
                    )
                )
            if not left:
                return round(time.monotonic() - started, 1)
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{left} jobs still due after {timeout} s")
            time.sleep(0.2)
    finally:
        db.dispose()


def _requests(fake: FakeStripe, path: str, host: str) -> list[tuple[str, bytes]]:
    out = []
    for body, header in fake.deliveries(
        stripe.WebhookSignature.generate_signature_header,
        types=frozenset({"payment_intent.succeeded"}),
    ):
        event_id = json.loads(body)["id"]
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Stripe-Signature: {header}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        out.append((event_id, head.encode() + body))
    return out


def _processing_ms(url: str, event_ids: list[str], timeout: float) -> tuple[list[float], int]:
    """Per event: stored → booking confirmed and receipt job enqueued (ms); and how many
    were not processed within ``timeout``."""
    db = create_database(url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with db.read() as session:
                events = session.execute(
                    sa.select(WebhookEvent.payload, WebhookEvent.received_at).where(
                        WebhookEvent.provider_event_id.in_(event_ids)
                    )
                ).all()
                payments = dict(
                    session.execute(sa.select(Payment.stripe_payment_intent_id, Payment.id)).all()
                )
                booked = {
                    p: (status, at)
                    for p, status, at in session.execute(
                        sa.select(Payment.id, Booking.status, Booking.updated_at).join(
                            Booking, Booking.id == Payment.booking_id
                        )
                    ).all()
                }
                receipts = dict(
                    session.execute(
                        sa.select(Job.dedupe_key, Job.created_at).where(Job.kind == RECEIPT_KIND)
                    ).all()
                )
            ms = []
            for payload, received in events:
                payment_id = payments.get(payload["data"]["object"]["id"])
                status, confirmed = booked.get(payment_id or "", ("", None))
                enqueued = receipts.get(f"{RECEIPT_KIND}:{payment_id}")
                if status == "confirmed" and confirmed is not None and enqueued is not None:
                    ms.append((max(confirmed, enqueued) - received).total_seconds() * 1000)
            if len(ms) == len(event_ids) or time.monotonic() > deadline:
                return ms, len(event_ids) - len(ms)
            time.sleep(0.2)
    finally:
        db.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="worker processes beside a --no-worker server (0: the server's embedded worker)",
    )
    args = parser.parse_args()
    postgres = args.database_url
    if postgres == "postgresql":
        postgres = os.environ["CLINICBRIDGE_TEST_DATABASE_URL"]
    n = int(args.rate * args.seconds)
    fake = FakeStripe(api_key=STRIPE_KEY, webhook_secret=WHSEC)
    embedded = args.workers == 0
    with (
        fake.serve() as fake_url,
        webhook_server(postgres, embedded_worker=embedded) as server,
        _worker_processes(args.workers, server.env) as workers,
    ):
        headers = {"Authorization": f"Bearer {server.api_key}"}
        with httpx.Client(base_url=server.url, timeout=30) as client:
            ids = _setup(client, headers, server.integration_id, fake_url)
            for intent in _book(client, headers, ids, n):
                fake.confirm(intent, "pm_card_visa")  # the patient pays with Stripe.js
        host = server.url.removeprefix("http://")
        requests = _requests(fake, server.path, host)
        backlog_s = _idle(server.database_url)  # the bookings' own jobs first
        hello = open_loop(server, hello_requests(server, n), rate=args.rate)
        pids = [server.proc.pid, *(w.pid for w in workers)]
        cpu_before = sum(_cpu_seconds(pid) for pid in pids)
        sent = open_loop(server, requests, rate=args.rate)
        processing, missing = _processing_ms(server.database_url, [k for k, _ in requests], 60)
        _idle(server.database_url)  # and what the events set off (receipts, messages)
        cpu_per_event_ms = (sum(_cpu_seconds(pid) for pid in pids) - cpu_before) * 1000 / n
    hello_ms = [r.latency_ms for r in hello if r.status == 200]
    answer_ms = [r.latency_ms for r in sent if 200 <= r.status < 300]
    p95 = percentile(processing, 95) if processing else float("inf")
    result = {
        "bench": "payment_webhook",
        "database": "postgresql" if postgres else "sqlite",
        "worker_processes": args.workers or "embedded",
        "rate_per_s": args.rate,
        "events": n,
        "answered_2xx": len(answer_ms),
        "unprocessed": missing,
        "processing_ms": {
            "p50": round(percentile(processing, 50), 2),
            "p95": round(p95, 2),
            "p99": round(percentile(processing, 99), 2),
        }
        if processing
        else None,
        "webhook_answer_ms": {
            "p50": round(percentile(answer_ms, 50), 2),
            "p95": round(percentile(answer_ms, 95), 2),
        }
        if answer_ms
        else None,
        "baseline_hello_ms": {
            "p50": round(percentile(hello_ms, 50), 2),
            "p95": round(percentile(hello_ms, 95), 2),
        }
        if hello_ms
        else None,
        "target_p95_ms": TARGET_P95_MS,
        # Load-independent: the CPU per event of the server (and workers), from ingest to
        # the last job it set off.
        "server_cpu_ms_per_event": round(cpu_per_event_ms, 2),
        "booking_backlog_s": backlog_s,
    }
    ok = missing == 0 and len(answer_ms) == n and p95 <= TARGET_P95_MS
    result["ok"] = ok
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
