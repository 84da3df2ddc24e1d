"""Calendar sync against the local Google Calendar fake, on SQLite.

1. Full initial import of --events events (5,000; target <= 10 s), then an incremental
   round with --changes changes (50: updates, deletions, new events; target <= 1 s).
   Each round runs ``sync_connection`` (token, listing, plan, batched writes with the
   schedule-version triggers, status). Baseline in the same run: the same listing
   fetched straight from the fake through httpx, no ClinicBridge code (the provider's
   share of the work), reported next to each round.
2. Push to busy blocks, end to end: the real app under uvicorn with its embedded worker;
   an event is added at the fake and its channel notification POSTed to
   ``/webhooks/{integration_id}``; timed until the block is in the database (inbox →
   process job → sync job → block). --rounds rounds, p95 target <= 2 s. Baseline: the
   notification POST's own round trip.

Prints one JSON object; exits 0 when every target holds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa
import uvicorn
from fastapi.testclient import TestClient

from _jobs import wait_until
from clinicbridge.app import create_app
from clinicbridge.calendars import push, runtime
from clinicbridge.calendars.sync import sync_connection
from clinicbridge.core.api_keys import issue_key
from clinicbridge.core.tenancy import create_tenant
from clinicbridge.db.engine import create_database
from clinicbridge.db.migrate import upgrade
from clinicbridge.scheduling.models import BusyBlock
from clinicbridge.settings import load_settings
from clinicbridge.testing import google_calendar as g
from clinicbridge.testing.hosts import HostRouter
from clinicbridge.testing.oauth_server import OAuthServer
from clinicbridge.vault.shared import shared_vault

FULL_TARGET_S, INCREMENTAL_TARGET_S, PUSH_P95_TARGET_S = 10.0, 1.0, 2.0
CLIENT = ("bench.apps.googleusercontent.com", "bench-client-secret")
API = "/api/v1"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def timed_event(start: datetime, minutes: int = 30, **extra: object) -> dict[str, object]:
    end = start + timedelta(minutes=minutes)
    return {"start": {"dateTime": start.isoformat()}, "end": {"dateTime": end.isoformat()}, **extra}


def raw_listing(router: HostRouter, token: str, params: dict[str, str | int]) -> int:
    """The provider's share: page through events.list with httpx only."""
    count, page = 0, None
    with httpx.Client(transport=router, base_url=g.API_BASE) as client:
        while True:
            query = dict(params, **({"pageToken": page} if page else {}))
            body = client.get("/calendar/v3/calendars/primary/events", params=query,
                              headers={"Authorization": f"Bearer {token}"}).json()  # fmt: skip
            count += len(body["items"])
            page = body.get("nextPageToken")
            if not page:
                return count


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cb-calendar-bench-"))
    port = free_port()
    settings = load_settings(
        database_url=f"sqlite:///{tmp}/bench.db", master_key_file=tmp / "master.key",
        port=port, worker_heartbeat_seconds=0.5, log_level="WARNING",
    )  # fmt: skip
    db = create_database(settings.database_url)
    upgrade(db.engine)
    fake = g.FakeGoogleCalendar(OAuthServer(*CLIENT, expires_in=86_400))
    router = HostRouter({g.API_HOST: fake, g.TOKEN_HOST: fake})
    runtime.configure(transport=router)
    now = datetime.now(UTC)
    with db.write() as session:
        tenant = create_tenant(session, name="Bench Clinic", now=now, timezone="America/Toronto")
        _, key = issue_key(
            session, tenant_id=tenant.id, name="bench", role="owner", now=now, created_by=None
        )
    headers = {"Authorization": f"Bearer {key}"}

    # --- setup through the API: provider, integration, authorization, connection ---------
    with TestClient(create_app(settings, db=db)) as client:
        provider = client.post(
            f"{API}/providers",
            json={"display_name": "Dr. Bench", "timezone": "America/Toronto"},
            headers=headers,
        ).json()["id"]
        creds = {"client_id": CLIENT[0], "client_secret": CLIENT[1]}
        body = {"connector": "google_calendar", "name": "Google", "credentials": creds}
        integration = client.post(f"{API}/integrations", headers=headers, json=body).json()["id"]
        started = client.post(
            f"{API}/providers/{provider}/calendar-accounts/authorize",
            json={"integration_id": integration},
            headers=headers,
        ).json()
        back = urlsplit(fake.oauth.consent(started["authorization_url"]))
        assert client.get(f"{back.path}?{back.query}").status_code == 200
        fake.calendars["primary"] = {}
        connection = client.post(
            f"{API}/providers/{provider}/calendar-connections",
            json={"integration_id": integration, "calendar": "primary"},
            headers=headers,
        ).json()["id"]
    # inside the sync window (90-day horizon): 60 ten-minute events a day
    base = now.replace(hour=6, minute=0, second=0, microsecond=0) + timedelta(days=1)
    ids = [
        fake.put(
            "primary",
            timed_event(base + timedelta(days=i // 60, minutes=15 * (i % 60)), minutes=10),
        )
        for i in range(args.events)
    ]
    vault = shared_vault(db, settings.master_key_file)
    (token,) = fake.oauth.access_tokens

    # --- 1. full import, then an incremental round ---------------------------------------
    t0 = time.perf_counter()
    full = sync_connection(db, vault, connection)
    full_s = time.perf_counter() - t0
    window = {
        "singleEvents": "true",
        "maxResults": 2500,
        "timeMin": (now - timedelta(days=1)).isoformat(),
        "timeMax": (now + timedelta(days=400)).isoformat(),
    }
    t0 = time.perf_counter()
    listed = raw_listing(router, token, window)
    full_baseline_s = time.perf_counter() - t0
    cursor = f"s.{fake.seq}"
    for i in range(args.changes):
        if i % 5 < 2:
            event = fake.calendars["primary"][ids[i]]
            fake.put(
                "primary",
                {**event, **timed_event(base + timedelta(days=85, minutes=15 * i), minutes=10)},
            )
        elif i % 5 < 4:
            fake.delete("primary", ids[i])
        else:
            fake.put("primary", timed_event(base + timedelta(days=86, minutes=15 * i), minutes=10))
    t0 = time.perf_counter()
    incremental = sync_connection(db, vault, connection)
    incremental_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    raw_listing(router, token, {"singleEvents": "true", "maxResults": 2500, "syncToken": cursor})
    incremental_baseline_s = time.perf_counter() - t0
    with db.read() as session:
        blocks = session.scalar(
            sa.select(sa.func.count()).where(BusyBlock.connection_id == connection)
        )
    expected = args.events - 2 * (args.changes // 5) + (args.changes // 5)
    assert full.blocks == args.events and blocks == expected, (full, blocks, expected)
    assert push.ensure_push(db, vault, connection, settings.public_base_url)

    # --- 2. push to blocks through the live server ---------------------------------------
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, embedded_worker=True),
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=15, what="the server")
    (channel,) = fake.channels
    latencies, posts = [], []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for i in range(args.rounds):
                event_id = fake.put(
                    "primary", timed_event(base + timedelta(days=87, minutes=15 * i), minutes=10)
                )
                address, note = fake.notification(channel)
                t0 = time.perf_counter()
                response = http.post(urlsplit(address).path, headers=note)
                posts.append(time.perf_counter() - t0)
                assert response.status_code == 200, response.text

                def landed(event_id: str = event_id) -> bool:
                    with db.read() as session:
                        return (
                            session.scalar(
                                sa.select(BusyBlock.id).where(BusyBlock.external_id == event_id)
                            )
                            is not None
                        )

                wait_until(landed, timeout=30, what="the pushed event's block", every=0.005)
                latencies.append(time.perf_counter() - t0)
    finally:
        server.should_exit = True
        thread.join(15)
        runtime.configure()
    p95 = statistics.quantiles(latencies, n=20)[-1] if len(latencies) >= 2 else latencies[0]
    result = {
        "benchmark": "calendar_sync",
        "events": args.events,
        "listed_by_baseline": listed,
        "full_import_s": round(full_s, 3),
        "full_import_baseline_s": round(full_baseline_s, 3),
        "full_import_target_s": FULL_TARGET_S,
        "changes": args.changes,
        "incremental_s": round(incremental_s, 3),
        "incremental_written": incremental.changes,
        "incremental_baseline_s": round(incremental_baseline_s, 3),
        "incremental_target_s": INCREMENTAL_TARGET_S,
        "push_rounds": args.rounds,
        "push_to_block_p50_s": round(statistics.median(latencies), 3),
        "push_to_block_p95_s": round(p95, 3),
        "push_post_p50_s": round(statistics.median(posts), 4),
        "push_target_p95_s": PUSH_P95_TARGET_S,
    }
    result["ok"] = (
        full_s <= FULL_TARGET_S
        and incremental_s <= INCREMENTAL_TARGET_S
        and p95 <= PUSH_P95_TARGET_S
    )
    print(json.dumps(result))
    db.dispose()
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
