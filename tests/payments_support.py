"""Shared by the payments tests: a fake Stripe wired into ``payments.stripe_api``, a
bookable schedule, Stripe events signed with the official ``stripe`` package and posted
to the real inbox, and a drain of the job queue in this thread."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import stripe
from fastapi.testclient import TestClient

from clinicbridge.core.clock import SystemClock
from clinicbridge.db.engine import Database
from clinicbridge.jobs.models import Job
from clinicbridge.jobs.registry import JobContext, registry
from clinicbridge.payments import stripe_api
from clinicbridge.settings import Settings
from clinicbridge.testing.stripe import FakeStripe
from tests.conftest import Clinic

API = "/api/v1"
KEY = "sk_test_clinic0000000000000000000000"
WHSEC = "whsec_clinicTest000000000000000000000"
STRIPE_BASE = "https://api.stripe.test"


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    api = FakeStripe(api_key=KEY, webhook_secret=WHSEC)
    stripe_api.configure(transport=httpx.MockTransport(api))
    yield api
    stripe_api.configure()


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    """The official SDK's Stripe-Signature (``t=...,v1=...``): not our own code."""
    return str(stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp))


@dataclass
class Shop:
    """A clinic set up to take payments: Stripe integration, a service with a price
    and a deposit, a provider with hours, and the next free slots."""

    clinic: Clinic
    integration: str
    service: str
    provider: str
    slots: list[str]
    patient: str


def stripe_integration(client: TestClient, clinic: Clinic, api_base: str = STRIPE_BASE) -> str:
    body = {
        "connector": "stripe",
        "name": "Stripe",
        "credentials": {"api_key": KEY, "webhook_secret": WHSEC},
        "settings": {"api_base": api_base, "currency": "CAD"},
    }
    return str(ok(client.post(f"{API}/integrations", json=body, headers=clinic.headers), 201)["id"])


def shop(client: TestClient, clinic: Clinic, *, api_base: str = STRIPE_BASE) -> Shop:
    h = clinic.headers
    loc = ok(
        client.post(
            f"{API}/locations", headers=h, json={"name": "Main St", "timezone": "America/Toronto"}
        ),
        201,
    )["id"]
    prv = ok(
        client.post(
            f"{API}/providers",
            headers=h,
            json={"display_name": "Dr. Ada Test", "timezone": "America/Toronto"},
        ),
        201,
    )["id"]
    hours = [{"weekday": d, "start": "00:00", "end": "24:00", "location_id": loc} for d in range(7)]
    ok(client.put(f"{API}/providers/{prv}/hours", json={"intervals": hours}, headers=h))
    svc = ok(
        client.post(
            f"{API}/services",
            headers=h,
            json={
                "name": "Physiotherapy",
                "duration_minutes": 30,
                "provider_ids": [prv],
                "price_minor": 9000,
                "currency": "CAD",
                "deposit_minor": 2500,
            },
        ),
        201,
    )["id"]
    start = datetime.now(UTC) + timedelta(days=2)
    found = ok(
        client.get(
            f"{API}/availability",
            headers=h,
            params={
                "service_id": svc,
                "from": start.date().isoformat(),
                "to": (start + timedelta(days=2)).date().isoformat(),
                "limit": 200,
            },
        )
    )["data"]
    patient = ok(
        client.post(
            f"{API}/patients?force=true",
            headers=h,
            json={
                "first_name": "Hélène",
                "last_name": "Tremblay",
                "date_of_birth": "1980-03-05",
                "email": "helene.tremblay@example.com",
                "preferred_language": "fr-CA",
            },
        ),
        201,
    )["id"]
    integration = stripe_integration(client, clinic, api_base)
    return Shop(clinic, integration, svc, prv, [s["start"] for s in found], patient)


def book(client: TestClient, s: Shop, slot: int = 0, **extra: Any) -> Any:
    body = {
        "service_id": s.service,
        "provider_id": s.provider,
        "start": s.slots[slot],
        "patient_id": s.patient,
        "payment": "deposit",
        **extra,
    }
    return client.post(f"{API}/bookings", json=body, headers=s.clinic.headers)


def post_event(client: TestClient, integration: str, body: bytes, header: str) -> None:
    answer = client.post(
        f"/webhooks/{integration}",
        content=body,
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
    )
    assert answer.status_code == 200, answer.text


def deliver(
    client: TestClient, fake: FakeStripe, integration: str, types: frozenset[str] | None = None
) -> int:
    """Post the events the fake emitted since last time, signed by the SDK."""
    pairs = fake.deliveries(sign, types=types)
    for body, header in pairs:
        post_event(client, integration, body, header)
    return len(pairs)


def drain(
    db: Database,
    settings: Settings,
    *,
    horizon: timedelta = timedelta(0),
    rounds: int = 20,
    kinds: tuple[str, ...] | None = None,
) -> list[str]:
    """Run due jobs (``run_at <= now + horizon``) in this thread until none are left;
    returns the kinds run. A handler error fails the test."""
    ran: list[str] = []
    for _ in range(rounds):
        now = datetime.now(UTC)
        with db.read() as session:
            stmt = (
                sa.select(Job)
                .where(Job.state.in_(("pending", "failed")), Job.run_at <= now + horizon)
                .order_by(Job.run_at, Job.id)
            )
            if kinds is not None:
                stmt = stmt.where(Job.kind.in_(kinds))
            else:  # outbound deliveries would try to reach the clinic's endpoint
                stmt = stmt.where(Job.kind != "webhooks.deliver")
            jobs = session.scalars(stmt).all()
        if not jobs:
            return ran
        for job in jobs:
            registration = registry.get(job.kind)
            assert registration is not None, job.kind
            context = JobContext(
                job.id,
                job.kind,
                job.tenant_id,
                dict(job.payload),
                job.attempts + 1,
                10,
                db,
                SystemClock().now,
                settings,
            )
            with db.write() as session:
                session.execute(sa.update(Job).where(Job.id == job.id).values(state="running"))
            try:
                registration.handler(context)
            finally:
                with db.write() as session:
                    session.execute(
                        sa.update(Job)
                        .where(Job.id == job.id)
                        .values(state="succeeded", attempts=job.attempts + 1)
                    )
            ran.append(job.kind)
    raise AssertionError(f"jobs kept coming: {ran[-20:]}")


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def paid_booking(
    client: TestClient,
    fake: FakeStripe,
    db: Database,
    settings: Settings,
    s: Shop,
    *,
    slot: int = 0,
    payment: str = "full",
) -> dict[str, Any]:
    """A booking whose payment succeeded (the webhook delivered and processed)."""
    made = ok(book(client, s, slot, payment=payment), 201)
    fake.confirm(made["payment"]["stripe_payment_intent_id"], "pm_card_visa")
    deliver(client, fake, s.integration)
    drain(db, settings)
    return dict(made)
