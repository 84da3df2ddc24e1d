"""Vapi ``checkAvailability`` tool calls end to end over HTTP, at a fixed rate.

One server process (the real app and its embedded worker, plus ``/bench/hello``)
on a fresh SQLite database, or a throwaway database on the PostgreSQL server
given by ``--database-url``. A clinic in America/Toronto with two providers
(Mon-Fri 09:00-17:00, 40 existing bookings each) and two services; a Vapi
integration created through the API. An open-loop sender posts ``tool-calls``
messages at ``--rate`` per second (natural dates: "next Tuesday morning",
"tomorrow at 10am", ...; a new call every few messages, so call rows are written
too), then the same number of hello-world requests at the same rate as the
baseline. Latency runs from each request's scheduled send time.

Target: p95 <= 30 ms at 20 calls/s. Prints one JSON object; exits 0 when met.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import sqlalchemy as sa

from _harness import running_server
from _webhooks import open_loop, percentile

TARGET_P95_MS = 30.0
SECRET = "vapi-bench-secret-0123456789abcdef"
PHRASES = (
    "next Tuesday morning",
    "tomorrow at 10am",
    "Thursday afternoon",
    "next week",
    "Friday at 2pm",
)
MESSAGES_PER_CALL = 5


def seed(database_url: str, tenant_id: str) -> None:
    """Two providers, two services, and 40 upcoming bookings per provider."""
    from clinicbridge.core.ids import new_id
    from clinicbridge.db.engine import create_database
    from clinicbridge.patients.models import Patient
    from clinicbridge.scheduling.models import (
        Booking,
        Location,
        Provider,
        Service,
        ServiceProvider,
        TimeClaim,
        WorkingHours,
    )

    now = datetime.now(UTC)
    db = create_database(database_url)
    tz = ZoneInfo("America/Toronto")
    try:
        with db.write() as session:
            loc = new_id("loc")
            session.add(
                Location(
                    id=loc,
                    tenant_id=tenant_id,
                    name="Main",
                    timezone="America/Toronto",
                    is_active=True,
                    created_at=now,
                    updated_at=now,
                )
            )
            providers = [new_id("prv"), new_id("prv")]
            for pid, name in zip(providers, ("Dr. Ada Lovelace", "Dr. Grace Hopper"), strict=True):
                session.add(
                    Provider(
                        id=pid,
                        tenant_id=tenant_id,
                        display_name=name,
                        timezone="America/Toronto",
                        is_active=True,
                        created_at=now,
                        updated_at=now,
                    )
                )
            services = [new_id("svc"), new_id("svc")]
            for sid, name, modality in zip(
                services,
                ("General check-up", "Video consultation"),
                ("in_person", "video"),
                strict=True,
            ):
                session.add(
                    Service(
                        id=sid,
                        tenant_id=tenant_id,
                        name=name,
                        duration_minutes=30,
                        buffer_before_minutes=0,
                        buffer_after_minutes=5,
                        slot_interval_minutes=30,
                        min_notice_minutes=60,
                        max_advance_days=90,
                        cancellation_window_minutes=0,
                        capacity=1,
                        modality=modality,
                        is_public=True,
                        is_active=True,
                        created_at=now,
                        updated_at=now,
                    )
                )
            patient = new_id("pat")
            session.add(
                Patient(
                    id=patient,
                    tenant_id=tenant_id,
                    first_name="Bench",
                    last_name="Patient",
                    first_norm="bench",
                    last_norm="patient",
                    name_key="PTNT",
                    created_by="bench",
                    created_at=now,
                    updated_at=now,
                )
            )
            session.flush()
            for pid in providers:
                for weekday in range(5):
                    session.add(
                        WorkingHours(
                            id=new_id("wkh"),
                            tenant_id=tenant_id,
                            provider_id=pid,
                            location_id=loc,
                            weekday=weekday,
                            start_minute=540,
                            end_minute=1020,
                        )
                    )
                for sid in services:
                    session.add(
                        ServiceProvider(service_id=sid, provider_id=pid, tenant_id=tenant_id)
                    )
            session.flush()
            # Existing bookings: every other weekday at 11:00 and 15:00 local, for 20 weekdays.
            day = now.astimezone(tz).date() + timedelta(days=1)
            made = 0
            while made < 40:
                if day.weekday() < 5:
                    for hour in (11, 15):
                        start = datetime(day.year, day.month, day.day, hour, tzinfo=tz)
                        for pid in providers:
                            claim = new_id("clm")
                            session.add(
                                TimeClaim(
                                    id=claim,
                                    tenant_id=tenant_id,
                                    provider_id=pid,
                                    service_id=services[0],
                                    starts_at=start,
                                    ends_at=start + timedelta(minutes=30),
                                    blocked_from=start,
                                    blocked_until=start + timedelta(minutes=35),
                                    capacity=1,
                                    seats_taken=1,
                                    active=True,
                                )
                            )
                            session.flush()
                            session.add(
                                Booking(
                                    id=new_id("bkg"),
                                    tenant_id=tenant_id,
                                    claim_id=claim,
                                    service_id=services[0],
                                    provider_id=pid,
                                    patient_id=patient,
                                    status="booked",
                                    starts_at=start,
                                    ends_at=start + timedelta(minutes=30),
                                    confirmation_code=f"B{made:02d}-{pid[-3:]}"[:16],
                                    source="api",
                                    version=1,
                                    created_by="bench",
                                    created_at=now,
                                    updated_at=now,
                                )
                            )
                        made += 1
                day += timedelta(days=1)
    finally:
        db.dispose()


def tool_request(host: str, path: str, call_id: str, n: int) -> bytes:
    body = json.dumps(
        {
            "message": {
                "type": "tool-calls",
                "timestamp": int(time.time() * 1000),
                "call": {"id": call_id, "customer": {"number": "+14385550142"}},
                "customer": {"number": "+14385550142"},
                "toolCallList": [
                    {
                        "id": f"toolu_{n}",
                        "type": "function",
                        "function": {
                            "name": "checkAvailability",
                            "arguments": {
                                "service": "check-up",
                                "provider": "any" if n % 2 else "Dr. Hopper",
                                "when": PHRASES[n % len(PHRASES)],
                            },
                        },
                    }
                ],
            }
        }
    ).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"X-Vapi-Secret: {SECRET}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def summary(sent: list[Any]) -> dict[str, float]:
    latencies = [s.latency_ms for s in sent if s.status == 200]
    return {
        "requests": len(sent),
        "ok": len(latencies),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p95_ms": round(percentile(latencies, 95), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(max(latencies, default=float("nan")), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=20.0, help="tool calls per second")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args()
    n = int(args.rate * args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/voice.db"
        with running_server(url) as server:
            auth = {"Authorization": f"Bearer {server.api_key}"}
            httpx.patch(
                f"{server.url}/api/v1/tenant", headers=auth, json={"timezone": "America/Toronto"}
            ).raise_for_status()
            seed(url, server.tenant_id)
            created = httpx.post(
                f"{server.url}/api/v1/integrations",
                headers=auth,
                json={
                    "connector": "vapi",
                    "name": "Bench",
                    "credentials": {"webhook_secret": SECRET},
                },
            )
            created.raise_for_status()
            path = f"/voice/vapi/{created.json()['id']}"
            host = server.url.removeprefix("http://")
            target = SimpleNamespace(url=server.url)
            prefix = uuid.uuid4().hex[:8]

            def requests(count: int, tag: str) -> list[tuple[str, bytes]]:
                return [
                    (
                        f"{tag}{i}",
                        tool_request(host, path, f"{prefix}-{tag}-{i // MESSAGES_PER_CALL}", i),
                    )
                    for i in range(count)
                ]

            # Warm both paths (dateparser, caches, connections) before measuring.
            warm = open_loop(target, requests(40, "w"), rate=args.rate)  # type: ignore[arg-type]
            sample = httpx.post(
                f"{server.url}{path}",
                headers={"X-Vapi-Secret": SECRET},
                content=tool_request(host, path, "sample", 1).split(b"\r\n\r\n", 1)[1],
            ).json()
            hello = f"GET /bench/hello HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            open_loop(target, [("h", hello)] * 40, rate=args.rate)  # type: ignore[arg-type]
            voice = open_loop(target, requests(n, "m"), rate=args.rate)  # type: ignore[arg-type]
            baseline = open_loop(target, [("h", hello)] * n, rate=args.rate)  # type: ignore[arg-type]
            from clinicbridge.db.engine import normalize_url

            in_db = sa.create_engine(normalize_url(url))
            try:
                with in_db.connect() as conn:
                    logged = conn.execute(
                        sa.text("SELECT count(*), avg(latency_ms) FROM voice_tool_calls")
                    ).one()
            finally:
                in_db.dispose()
    result_text = json.loads(sample["results"][0]["result"])
    voice_stats, hello_stats = summary(voice), summary(baseline)
    errors = sum(1 for s in voice if s.status != 200) + sum(1 for s in warm if s.status != 200)
    result = {
        "benchmark": "voice_tools",
        "database": "postgresql" if args.database_url else "sqlite",
        "rate_per_s": args.rate,
        "seconds": args.seconds,
        "check_availability": voice_stats,
        "hello_world": hello_stats,
        "p95_ratio_to_hello": round(voice_stats["p95_ms"] / hello_stats["p95_ms"], 2),
        "tool_calls_logged": logged[0],
        "mean_in_process_tool_ms": round(float(logged[1] or 0), 2),
        "sample_result": result_text,
        "non_200": errors,
        "target_p95_ms": TARGET_P95_MS,
        "pass": voice_stats["p95_ms"] <= TARGET_P95_MS
        and errors == 0
        and result_text.get("success") is True,
    }
    print(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
