"""Concurrent ``POST /api/v1/bookings`` against the real server: no double booking.

The server is ``clinicbridge serve`` in a subprocess (embedded worker included) on
this test's database, SQLite or PostgreSQL. The clinic's schedule is set up
through the API; 50 threads, each with its own connection already open, are
released together by a barrier and post their booking at once.

* Same slot: exactly one 201 and 49 answers of 409 ``slot-taken`` carrying
  ``next_available``; the database holds one active booking and one active time
  claim for that provider at that time.
* Overlapping starts (a 30-minute service on a 15-minute grid): the winners do not
  overlap, every loser overlaps a winner, and no two active claims of the
  provider overlap in the database.
* A group service of capacity 3: exactly three 201s, all seated on one claim.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import aliased

from clinicbridge.db.engine import Database
from clinicbridge.scheduling.models import ACTIVE_STATUSES, Booking, TimeClaim
from tests.conftest import Clinic, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
API = "/api/v1"
RACERS = 50
REQUEST_TIMEOUT_S = 60.0
TZ = "America/Toronto"


class ServerProcess:
    """``clinicbridge serve`` on a free port; its output goes to ``log``."""

    def __init__(self, database_url: str, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "server.log"
        self.env = {
            **os.environ,
            "CLINICBRIDGE_DATABASE_URL": database_url,
            "CLINICBRIDGE_MASTER_KEY_FILE": str(tmp / "master.key"),
            "CLINICBRIDGE_LOG_LEVEL": "WARNING",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "clinicbridge.cli", "serve", "--port", str(self.port)],
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
                raise RuntimeError(f"server did not start:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def log_tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@pytest.fixture
def server(database_url: str, clinic: Clinic, tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(database_url, tmp_path)
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()


@dataclass
class Schedule:
    provider_id: str
    service_id: str
    slots: list[dict[str, Any]]  # from GET /availability, in order


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def set_up(client: httpx.Client, *, capacity: int = 1, interval: int = 30) -> Schedule:
    """A location, a provider working 08:00-18:00 every day, a 30-minute service and
    the provider's slots of the next week."""
    loc = _ok(client.post(f"{API}/locations", json={"name": "Race St", "timezone": TZ}), 201)
    prv = _ok(
        client.post(f"{API}/providers", json={"display_name": "Dr. Race Test", "timezone": TZ}),
        201,
    )
    hours = [
        {"weekday": d, "start": "08:00", "end": "18:00", "location_id": loc["id"]} for d in range(7)
    ]
    _ok(client.put(f"{API}/providers/{prv['id']}/hours", json={"intervals": hours}))
    svc = _ok(
        client.post(
            f"{API}/services",
            json={
                "name": "Group class" if capacity > 1 else "Consultation",
                "duration_minutes": 30,
                "slot_interval_minutes": interval,
                "capacity": capacity,
                "provider_ids": [prv["id"]],
            },
        ),
        201,
    )
    now = datetime.now(UTC)
    found = _ok(
        client.get(
            f"{API}/availability",
            params={
                "service_id": svc["id"],
                "provider_id": prv["id"],
                "from": (now + timedelta(days=1)).isoformat(),
                "to": (now + timedelta(days=8)).isoformat(),
            },
        )
    )["data"]
    assert len(found) > 20, found
    return Schedule(prv["id"], svc["id"], found)


def make_patients(client: httpx.Client, n: int) -> list[str]:
    ids = []
    for i in range(n):
        body = {
            "first_name": f"Racer{i:02d}",
            "last_name": "Example",
            "date_of_birth": f"19{50 + i}-0{1 + i % 9}-1{i % 10}",
            "email": f"racer{i:02d}@example.com",
        }
        ids.append(_ok(client.post(f"{API}/patients?force=true", json=body), 201)["id"])
    return ids


def inline_patient(i: int) -> dict[str, str]:
    return {
        "first_name": f"Inline{i:02d}",
        "last_name": "Sample",
        "date_of_birth": f"19{40 + i}-1{i % 3}-2{i % 8}",
        "email": f"inline{i:02d}@example.com",
    }


@dataclass
class Outcome:
    body: dict[str, Any]  # what was sent
    status: int = 0  # 0: no answer
    answer: Any = None
    text: str = ""
    error: str = ""


def race(server: ServerProcess, clinic: Clinic, bodies: list[dict[str, Any]]) -> list[Outcome]:
    """Post every body from its own thread and connection, all released at once."""
    barrier = threading.Barrier(len(bodies))
    outcomes = [Outcome(body) for body in bodies]

    def run(out: Outcome) -> None:
        try:
            with httpx.Client(
                base_url=server.url, headers=clinic.headers, timeout=REQUEST_TIMEOUT_S
            ) as client:
                client.get("/healthz")  # connect first: the race is the POST alone
                barrier.wait(timeout=30)
                response = client.post(f"{API}/bookings", json=out.body)
            out.status, out.text = response.status_code, response.text
            try:
                out.answer = response.json()
            except ValueError:
                out.answer = None
        except Exception as exc:  # reported by the assertions, with the server's log
            out.error = repr(exc)

    threads = [threading.Thread(target=run, args=(out,)) for out in outcomes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(REQUEST_TIMEOUT_S + 40)
    return outcomes


def explain(server: ServerProcess, outcomes: list[Outcome]) -> str:
    """Statuses, the first few unexpected answers, and the tail of the server's log."""
    statuses = Counter(o.status for o in outcomes)
    odd = [o for o in outcomes if o.status not in (201, 409)][:3]
    lines = [f"statuses: {dict(statuses)}"]
    lines += [f"{o.status} {o.error or o.text[:1500]}" for o in odd]
    lines.append(f"server log (tail):\n{server.log_tail()}")
    return "\n".join(lines)


def _instant(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() is not None, f"{value!r} has no offset"
    return parsed


def check_slot_taken(
    out: Outcome, provider: str, taken: list[tuple[datetime, datetime]] | None = None
) -> None:
    """A 409 ``slot-taken`` problem offering other times in ``next_available``: never the
    start it refused, nor ``taken`` (time whose winner had committed before the refusal).

    Only that much holds under a race: a loser may rightly offer a slot whose own winner
    had not committed yet when the loser looked."""
    problem = out.answer
    assert isinstance(problem, dict), out.text
    assert str(problem.get("type", "")).endswith("slot-taken"), out.text
    assert problem.get("status") == 409, out.text
    offered = problem.get("next_available")
    assert isinstance(offered, list) and offered, f"refused {out.body['start']}: {out.text}"
    refused = _instant(out.body["start"])
    for slot in offered:
        assert set(slot) >= {"start", "end", "provider_id"}, slot
        if slot["provider_id"] != provider:
            continue
        start, end = _instant(slot["start"]), _instant(slot["end"])
        assert start != refused, f"refused {out.body['start']} but offers it: {out.text}"
        clash = [t for t in taken or [] if start < t[1] and t[0] < end]
        assert not clash, f"refused {out.body['start']} but offers taken time {slot}"


def overlapping_active_claims(db: Database, provider_id: str) -> int:
    a, b = aliased(TimeClaim), aliased(TimeClaim)
    with db.read() as session:
        return int(
            session.scalar(
                sa.select(sa.func.count())
                .select_from(a)
                .join(b, sa.and_(a.provider_id == b.provider_id, a.id < b.id))
                .where(
                    a.provider_id == provider_id,
                    a.active.is_(True),
                    b.active.is_(True),
                    a.blocked_from < b.blocked_until,
                    b.blocked_from < a.blocked_until,
                )
            )
            or 0
        )


def active_bookings(db: Database, provider_id: str) -> list[Booking]:
    with db.read() as session:
        rows = session.scalars(
            sa.select(Booking).where(
                Booking.provider_id == provider_id, Booking.status.in_(ACTIVE_STATUSES)
            )
        ).all()
        session.expunge_all()
        return list(rows)


def active_claims(db: Database, provider_id: str) -> list[TimeClaim]:
    with db.read() as session:
        rows = session.scalars(
            sa.select(TimeClaim).where(
                TimeClaim.provider_id == provider_id, TimeClaim.active.is_(True)
            )
        ).all()
        session.expunge_all()
        return list(rows)


def _client(server: ServerProcess, clinic: Clinic) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=clinic.headers, timeout=30)


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def test_fifty_requests_for_one_slot_book_it_once(
    server: ServerProcess, clinic: Clinic, db: Database
) -> None:
    with _client(server, clinic) as client:
        schedule = set_up(client)
        patients = make_patients(client, RACERS)
    slot = schedule.slots[3]
    body = {
        "service_id": schedule.service_id,
        "provider_id": schedule.provider_id,
        "start": slot["start"],
    }
    outcomes = race(server, clinic, [{**body, "patient_id": p} for p in patients])

    statuses = Counter(o.status for o in outcomes)
    assert statuses == {201: 1, 409: RACERS - 1}, explain(server, outcomes)
    (won,) = [o for o in outcomes if o.status == 201]
    start, end = _instant(slot["start"]), _instant(slot["end"])
    assert won.answer["status"] == "booked", won.text
    assert _instant(won.answer["start"]) == start, won.text
    assert _instant(won.answer["end"]) == end, won.text
    assert won.answer["provider_id"] == schedule.provider_id
    assert won.answer["patient_id"] == won.body["patient_id"]
    assert won.answer["confirmation_code"], won.text
    for out in outcomes:
        if out.status == 409:
            check_slot_taken(out, schedule.provider_id, [(start, end)])

    bookings = active_bookings(db, schedule.provider_id)
    assert [b.id for b in bookings] == [won.answer["id"]]
    assert _utc(bookings[0].starts_at) == _utc(start)
    claims = active_claims(db, schedule.provider_id)
    assert len(claims) == 1, claims
    assert claims[0].id == bookings[0].claim_id
    assert claims[0].seats_taken == 1
    assert _utc(claims[0].starts_at) == _utc(start)
    with db.read() as session:  # losers left nothing behind, not even an inactive booking
        assert session.scalar(sa.select(sa.func.count()).select_from(Booking)) == 1
    assert overlapping_active_claims(db, schedule.provider_id) == 0

    with _client(server, clinic) as client:  # the slot is gone from availability
        after = _ok(
            client.get(
                f"{API}/availability",
                params={
                    "service_id": schedule.service_id,
                    "provider_id": schedule.provider_id,
                    "from": slot["start"],
                    "to": slot["end"],
                },
            )
        )["data"]
    assert after == []


def test_overlapping_starts_never_overlap_in_the_database(
    server: ServerProcess, clinic: Clinic, db: Database
) -> None:
    """Ten racers at each of S, S+15, S+30, S+45, S+60 for a 30-minute service, patients
    created inline: 2 or 3 non-overlapping winners, every loser overlaps a winner."""
    with _client(server, clinic) as client:
        schedule = set_up(client, interval=15)
    starts = {_instant(s["start"]): s for s in schedule.slots}
    first = next(
        at
        for at in sorted(starts)
        if all(at + timedelta(minutes=15 * k) in starts for k in range(5))
    )
    offsets = [first + timedelta(minutes=15 * k) for k in range(5)]
    bodies = [
        {
            "service_id": schedule.service_id,
            "provider_id": schedule.provider_id,
            "start": starts[offsets[i % 5]]["start"],
            "patient": inline_patient(i),
        }
        for i in range(RACERS)
    ]
    outcomes = race(server, clinic, bodies)

    statuses = Counter(o.status for o in outcomes)
    assert set(statuses) <= {201, 409}, explain(server, outcomes)
    won = [o for o in outcomes if o.status == 201]
    spans = sorted(
        (_instant(o.answer["start"]), _instant(o.answer["end"])) for o in won if o.answer
    )
    assert 2 <= len(won) <= 3, explain(server, outcomes)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, f"winners overlap: {spans}"
    for out in outcomes:
        if out.status == 409:
            at = _instant(out.body["start"])
            mine = (at, at + timedelta(minutes=30))
            assert any(mine[0] < e and s < mine[1] for s, e in spans), (
                f"{out.body['start']} was refused but overlaps no winner: {spans}"
            )
            check_slot_taken(out, schedule.provider_id)

    assert overlapping_active_claims(db, schedule.provider_id) == 0
    bookings = active_bookings(db, schedule.provider_id)
    assert sorted(b.id for b in bookings) == sorted(o.answer["id"] for o in won)
    assert len(active_claims(db, schedule.provider_id)) == len(won)
    with db.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Booking)) == len(won)


def test_group_session_seats_exactly_its_capacity(
    server: ServerProcess, clinic: Clinic, db: Database
) -> None:
    with _client(server, clinic) as client:
        schedule = set_up(client, capacity=3)
        patients = make_patients(client, RACERS)
    slot = schedule.slots[2]
    assert slot["seats_left"] == 3, slot
    bodies = [
        {
            "service_id": schedule.service_id,
            "provider_id": schedule.provider_id,
            "start": slot["start"],
            "patient_id": p,
        }
        for p in patients
    ]
    outcomes = race(server, clinic, bodies)

    statuses = Counter(o.status for o in outcomes)
    assert statuses == {201: 3, 409: RACERS - 3}, explain(server, outcomes)
    start, end = _instant(slot["start"]), _instant(slot["end"])
    for out in outcomes:
        if out.status == 409:
            check_slot_taken(out, schedule.provider_id, [(start, end)])
    won = {o.answer["id"] for o in outcomes if o.status == 201}
    bookings = active_bookings(db, schedule.provider_id)
    assert {b.id for b in bookings} == won
    claims = active_claims(db, schedule.provider_id)
    assert len(claims) == 1, claims
    assert claims[0].capacity == 3 and claims[0].seats_taken == 3
    assert {b.claim_id for b in bookings} == {claims[0].id}
    assert len({b.patient_id for b in bookings}) == 3


def test_group_session_racers_within_capacity_all_get_a_seat(
    server: ServerProcess, clinic: Clinic, db: Database
) -> None:
    """As many racers as seats on an empty group slot: nobody is refused (the first
    seat's claim is created by one of them while the others look for it)."""
    seats = 5
    with _client(server, clinic) as client:
        schedule = set_up(client, capacity=seats)
        patients = make_patients(client, seats)
    slot = schedule.slots[4]
    bodies = [
        {
            "service_id": schedule.service_id,
            "provider_id": schedule.provider_id,
            "start": slot["start"],
            "patient_id": p,
        }
        for p in patients
    ]
    outcomes = race(server, clinic, bodies)

    statuses = Counter(o.status for o in outcomes)
    assert statuses == {201: seats}, explain(server, outcomes)
    claims = active_claims(db, schedule.provider_id)
    assert len(claims) == 1, claims
    assert claims[0].seats_taken == seats
