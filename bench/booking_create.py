"""Booking creation (POST /api/v1/bookings) with conflicts vs hello world on the same server.

One server process (the real app and its embedded worker, plus ``/bench/hello``) on a
fresh SQLite database, or a throwaway database on the PostgreSQL server given by
``--database-url`` (``postgresql`` alone means ``$CLINICBRIDGE_TEST_DATABASE_URL``).
Set up through the API: a location, ``--providers`` providers working around the clock
every day (America/Toronto), one 30-minute service on a 15-minute grid given by all of
them, and 200 patients. Free slots come from ``GET /api/v1/availability``.

Closed loop: ``--connections`` keep-alive connections (raw asyncio sockets, so every
answer is matched to its request) post bookings for ``--seconds``, in rounds
interleaved with hello-world rounds through the same sender (not wrk: the integrity
check needs each answer of each request). About ``--conflicts``
of the requests (20 %) target time already requested a while before (at least four
times the connections back): the same start, or 15 minutes later, which overlaps. Those
must be answered 409 ``slot-taken``; the others 201.

Target: >= 300 bookings (201s) per second on SQLite, median of the rounds. The ratio of
booking requests/s to hello-world requests/s (median of the per-round ratios) is
reported for comparison with the other benches, not judged. Integrity,
checked in the database afterwards: the 201s are exactly the bookings stored, each
where its answer said; no two active claims of a provider overlap; every 409 is a
``slot-taken`` problem for time that an active booking does occupy; no other answers.
Prints one JSON object; exits 0 when the target is met and nothing is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from _harness import Server, running_server

TARGET_BOOKINGS_PER_S = 300.0
TZ = "America/Toronto"
DURATION = timedelta(minutes=30)
PATIENTS = 200
WINDOW_DAYS = 31  # per availability request (the API allows 62 days and 5,000 slots)


# -- setup through the API -------------------------------------------------------------------


@dataclass
class Clinic:
    service_id: str
    providers: list[str]
    patients: list[str]


def _ok(response: httpx.Response, status: int = 200) -> Any:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
    return response.json()


def set_up(client: httpx.Client, providers: int) -> Clinic:
    loc = _ok(client.post("/api/v1/locations", json={"name": "Bench St", "timezone": TZ}), 201)
    ids = []
    for i in range(providers):
        body = {"display_name": f"Dr. Bench {i:02d}", "timezone": TZ}
        pid = _ok(client.post("/api/v1/providers", json=body), 201)["id"]
        hours = [
            {"weekday": d, "start": "00:00", "end": "24:00", "location_id": loc["id"]}
            for d in range(7)
        ]
        _ok(client.put(f"/api/v1/providers/{pid}/hours", json={"intervals": hours}))
        ids.append(pid)
    service = {
        "name": "Consultation",
        "duration_minutes": 30,
        "slot_interval_minutes": 15,
        "max_advance_days": 730,
        "provider_ids": ids,
    }
    svc = _ok(client.post("/api/v1/services", json=service), 201)["id"]
    patients = []
    for i in range(PATIENTS):
        body = {
            "first_name": f"Bench{i:03d}",
            "last_name": "Patient",
            "date_of_birth": f"{1940 + i % 60}-{1 + i % 12:02d}-{1 + i % 28:02d}",
            "email": f"bench{i:03d}@example.com",
        }
        patients.append(_ok(client.post("/api/v1/patients?force=true", json=body), 201)["id"])
    return Clinic(svc, ids, patients)


class SlotPool:
    """Free 30-minute slots on the half hour whose quarter-past start is bookable too,
    fetched from the availability API one window at a time, round robin over providers."""

    def __init__(self, client: httpx.Client, clinic: Clinic) -> None:
        self.client, self.clinic = client, clinic
        self.window = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        self.window += timedelta(days=1)
        self.queue: list[tuple[str, str, str]] = []  # (provider, start, start + 15 min)
        self.offset = 0

    def _fill(self) -> None:
        lo, hi = self.window, self.window + timedelta(days=WINDOW_DAYS)
        self.window = hi
        per_provider = []
        for pid in self.clinic.providers:
            params = {
                "service_id": self.clinic.service_id,
                "provider_id": pid,
                "from": lo.isoformat(),
                "to": hi.isoformat(),
                "limit": "5000",
            }
            data = _ok(self.client.get("/api/v1/availability", params=params))["data"]
            starts = {datetime.fromisoformat(s["start"]): s["start"] for s in data}
            found = [
                (pid, text, starts[at + timedelta(minutes=15)])
                for at, text in sorted(starts.items())
                if at.minute % 30 == 0 and at + timedelta(minutes=15) in starts
            ]
            per_provider.append(found)
        if not any(per_provider):
            raise RuntimeError(f"no free slots between {lo} and {hi}")
        for row in zip(*per_provider, strict=False):
            self.queue.extend(row)

    def ensure(self, n: int) -> None:
        """Fetch slots until ``n`` are ready (not while the sender runs: it would wait)."""
        while len(self.queue) - self.offset < n:
            self._fill()

    def take(self) -> tuple[str, str, str] | None:
        if self.offset >= len(self.queue):
            return None
        self.offset += 1
        return self.queue[self.offset - 1]


# -- the requests ----------------------------------------------------------------------------


@dataclass
class Request:
    kind: str  # fresh, or conflict (time requested before)
    provider_id: str
    start: str
    raw: bytes
    status: int = 0  # 0: not sent, or no answer
    body: bytes = b""
    error: str = ""


def _raw(host: str, key: str, payload: dict[str, str]) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    head = (
        f"POST /api/v1/bookings HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Mix:
    """Booking requests, made as they are sent: fresh slots, and about ``share`` conflicts
    with time requested at least ``lag`` fresh requests before (the same start, or a
    quarter of an hour later)."""

    def __init__(
        self, server: Server, clinic: Clinic, pool: SlotPool, share: float, lag: int, seed: int
    ) -> None:
        self.host = server.url.removeprefix("http://")
        self.key, self.clinic, self.pool = server.api_key, clinic, pool
        self.share, self.lag = share, lag
        self.rng = random.Random(seed)
        self.requested: list[tuple[str, str, str]] = []  # every fresh slot sent, in order
        self.count = 0

    def __call__(self) -> Request | None:
        if len(self.requested) > self.lag and self.rng.random() < self.share:
            pid, start, quarter = self.rng.choice(self.requested[: -self.lag])
            kind, at = "conflict", self.rng.choice((start, quarter))
        else:
            slot = self.pool.take()
            if slot is None:
                return None
            pid, at, _ = slot
            self.requested.append(slot)
            kind = "fresh"
        patient = self.clinic.patients[self.count % len(self.clinic.patients)]
        self.count += 1
        payload = {
            "service_id": self.clinic.service_id,
            "provider_id": pid,
            "start": at,
            "patient_id": patient,
        }
        return Request(kind, pid, at, _raw(self.host, self.key, payload))


def hello(server: Server) -> Callable[[], Request | None]:
    host = server.url.removeprefix("http://")
    raw = f"GET /bench/hello HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    return lambda: Request("hello", "", "", raw)


# -- the closed-loop sender ------------------------------------------------------------------


_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")


async def _closed_loop(
    host: str,
    port: int,
    make: Callable[[], Request | None],
    sent: list[Request],
    connections: int,
    seconds: float,
) -> tuple[float, bool]:
    """Each connection sends a new request once its previous one is answered, until
    ``seconds`` have passed. Returns (elapsed seconds, ran out of requests)."""
    ran_out = False
    start = time.perf_counter()
    stop = start + seconds

    async def connection() -> None:
        nonlocal ran_out
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while time.perf_counter() < stop:
            request = make()
            if request is None:
                ran_out = True
                break
            sent.append(request)
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(request.raw)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                length = _CONTENT_LENGTH.search(head)
                body = await reader.readexactly(int(length.group(1))) if length else b""
                request.status, request.body = int(head[9:12]), body
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                request.error = type(exc).__name__
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return time.perf_counter() - start, ran_out


def closed_loop(
    server: Server, make: Callable[[], Request | None], *, connections: int, seconds: float
) -> tuple[dict[str, Any], list[Request]]:
    host, port = server.url.removeprefix("http://").split(":")
    sent: list[Request] = []
    elapsed, ran_out = asyncio.run(_closed_loop(host, int(port), make, sent, connections, seconds))
    statuses = Counter(r.status or r.error for r in sent)
    run = {
        "seconds": round(elapsed, 3),
        "sent": len(sent),
        "requests_per_s": round(len(sent) / elapsed, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
        "ran_out": ran_out,
    }
    return run, sent


def booking_round(
    mix: Mix, server: Server, *, connections: int, seconds: float
) -> tuple[dict[str, Any], list[Request]]:
    mix.pool.ensure(int(2000 * seconds))  # far more than the server can take
    run, sent = closed_loop(server, mix, connections=connections, seconds=seconds)
    created = sum(1 for r in sent if r.status == 201)
    run["bookings_per_s"] = round(created / run["seconds"], 1)
    run["by_kind"] = {
        kind: dict(Counter(str(r.status or r.error) for r in sent if r.kind == kind))
        for kind in ("fresh", "conflict")
    }
    return run, sent


# -- integrity -------------------------------------------------------------------------------


@dataclass
class Integrity:
    bookings_stored: int = 0
    created_answers: int = 0
    conflicts_answered: int = 0
    fresh_refused: int = 0  # a fresh slot lost to an earlier, overlapping conflict request
    conflicts_booked: int = 0
    problems: list[str] = field(default_factory=list)


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def check(database_url: str, tenant_id: str, sent: Sequence[Request]) -> Integrity:
    from clinicbridge.db.engine import normalize_url
    from clinicbridge.scheduling.models import Booking, TimeClaim

    result = Integrity()
    engine = sa.create_engine(normalize_url(database_url))
    try:
        with engine.connect() as conn:
            bookings = conn.execute(
                sa.select(
                    Booking.id,
                    Booking.provider_id,
                    Booking.starts_at,
                    Booking.ends_at,
                    Booking.status,
                ).where(Booking.tenant_id == tenant_id)
            ).all()
            claims = conn.execute(
                sa.select(TimeClaim.provider_id, TimeClaim.blocked_from, TimeClaim.blocked_until)
                .where(TimeClaim.tenant_id == tenant_id, TimeClaim.active.is_(True))
                .order_by(TimeClaim.provider_id, TimeClaim.blocked_from)
            ).all()
    finally:
        engine.dispose()
    problems = result.problems
    result.bookings_stored = len(bookings)
    stored = {b.id: b for b in bookings}
    if any(b.status not in ("booked", "confirmed") for b in bookings):
        problems.append("a booking is not active: " + str(Counter(b.status for b in bookings)))

    prev = None
    for claim in claims:
        lo, hi = claim.blocked_from, claim.blocked_until
        if prev is not None and prev[0] == claim.provider_id and prev[1] > lo:
            problems.append(f"active claims of {claim.provider_id} overlap at {lo.isoformat()}")
        prev = (claim.provider_id, hi)
    if len(claims) != len(bookings):
        problems.append(f"{len(claims)} active claims for {len(bookings)} bookings")

    occupied: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    for b in bookings:
        occupied[b.provider_id].append((b.starts_at, b.ends_at))
    for spans in occupied.values():
        spans.sort()

    answered_ids = []
    odd: Counter[str] = Counter()
    for r in sent:
        if r.status == 201:
            answer = json.loads(r.body)
            answered_ids.append(answer["id"])
            row = stored.get(answer["id"])
            if row is None:
                problems.append(f"booking {answer['id']} answered 201 is not stored")
            elif row.provider_id != r.provider_id or row.starts_at != _utc(r.start):
                problems.append(f"booking {answer['id']} is stored elsewhere than requested")
            if r.kind == "conflict":
                result.conflicts_booked += 1
        elif r.status == 409:
            result.conflicts_answered += 1
            if r.kind == "fresh":
                result.fresh_refused += 1
            problem = json.loads(r.body)
            if not str(problem.get("type", "")).endswith("slot-taken"):
                odd[f"409 {problem.get('type')}"] += 1
            elif not isinstance(problem.get("next_available"), list):
                odd["409 without next_available"] += 1
            lo = _utc(r.start)
            spans = occupied.get(r.provider_id, [])
            i = bisect.bisect_left(spans, (lo + DURATION,))
            if not any(s < lo + DURATION and lo < e for s, e in spans[max(0, i - 2) : i]):
                problems.append(f"409 for {r.provider_id} at {r.start}, which nothing occupies")
        else:
            odd[f"{r.status or r.error}: {r.body[:300].decode(errors='replace')}"] += 1
    result.created_answers = len(answered_ids)
    if len(set(answered_ids)) != len(answered_ids):
        problems.append("one booking was answered 201 twice")
    if set(answered_ids) != set(stored):
        extra = len(set(stored) - set(answered_ids))
        problems.append(f"{extra} stored bookings were never answered 201")
    problems.extend(f"{n} answers {what}" for what, n in odd.most_common(5))
    if len(problems) > 20:
        result.problems = [*problems[:20], f"... and {len(problems) - 20} more"]
    return result


# -- the run ---------------------------------------------------------------------------------


@contextmanager
def database(url: str | None) -> Iterator[str]:
    if url:
        from _webhooks import postgres_database

        with postgres_database(url) as made:
            yield made
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite:///{tmp}/bench.db"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5, help="per route and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--providers", type=int, default=8)
    parser.add_argument("--conflicts", type=float, default=0.2, help="share of conflicting ones")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server's URL")
    args = parser.parse_args()
    pg_url = args.database_url
    if pg_url == "postgresql":
        pg_url = os.environ.get("CLINICBRIDGE_TEST_DATABASE_URL")
        if not pg_url:
            print("CLINICBRIDGE_TEST_DATABASE_URL is not set", file=sys.stderr)
            return 2
    c, s = args.connections, args.seconds
    with database(pg_url) as url, running_server(url) as server:
        auth = {"Authorization": f"Bearer {server.api_key}"}
        with httpx.Client(base_url=server.url, headers=auth, timeout=60) as client:
            clinic = set_up(client, args.providers)
            pool = SlotPool(client, clinic)
            mix = Mix(server, clinic, pool, args.conflicts, lag=4 * c, seed=args.seed)
            all_sent: list[Request] = []
            # warm both paths (imports, pools, caches)
            closed_loop(server, hello(server), connections=c, seconds=2)
            warm, sent = booking_round(mix, server, connections=c, seconds=2)
            all_sent += sent
            rounds: list[dict[str, Any]] = []
            for _ in range(args.rounds):
                base, _ = closed_loop(server, hello(server), connections=c, seconds=s)
                run, sent = booking_round(mix, server, connections=c, seconds=s)
                all_sent += sent
                rounds.append(
                    {
                        "hello_world": base,
                        "bookings": run,
                        "ratio": round(run["requests_per_s"] / base["requests_per_s"], 3),
                    }
                )
            rss = server.rss_mb()
        integrity = check(url, server.tenant_id, all_sent)
    per_s = statistics.median(r["bookings"]["bookings_per_s"] for r in rounds)
    ratio = statistics.median(r["ratio"] for r in rounds)
    median = min(rounds, key=lambda r: abs(r["bookings"]["bookings_per_s"] - per_s))
    if any(r["bookings"]["ran_out"] or r["hello_world"]["ran_out"] for r in rounds):
        integrity.problems.append("a round ran out of prepared requests")
    result = {
        "benchmark": "booking_create",
        "database": "postgresql" if pg_url else "sqlite",
        "providers": args.providers,
        "conflict_share": args.conflicts,
        "connections": c,
        "seconds_per_round": s,
        "warm_up": warm,
        "median_round": median,
        "round_bookings_per_s": [r["bookings"]["bookings_per_s"] for r in rounds],
        "round_ratios": [r["ratio"] for r in rounds],
        "bookings_per_s": per_s,
        "target_bookings_per_s": TARGET_BOOKINGS_PER_S,
        "ratio_to_hello_world": ratio,
        "server_rss_mb": rss,
        "integrity": {
            "requests": len(all_sent),
            "answered_201": integrity.created_answers,
            "bookings_stored": integrity.bookings_stored,
            "answered_409": integrity.conflicts_answered,
            "fresh_slot_refused": integrity.fresh_refused,
            "conflict_request_booked": integrity.conflicts_booked,
            "problems": integrity.problems,
        },
        "pass": per_s >= TARGET_BOOKINGS_PER_S and not integrity.problems,
    }
    print(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
