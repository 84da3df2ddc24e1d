"""Refunds and disputes: full and partial, booked only on charge.refunded, two-person
approval above the threshold, the errors that name the field, Stripe down, disputes,
audit, outbound events, and permissions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.audit.models import AuditEvent
from clinicbridge.core.ids import new_id
from clinicbridge.db.engine import Database
from clinicbridge.payments.models import LedgerEntry
from clinicbridge.settings import Settings
from clinicbridge.testing.stripe import FakeStripe
from clinicbridge.webhooks.models import WebhookDelivery, WebhookEndpoint
from tests.conftest import Clinic, add_key
from tests.payments_support import (
    API,
    Shop,
    deliver,
    drain,
    fake,
    ok,
    paid_booking,
    shop,
)

__all__ = ["fake"]


@pytest.fixture
def s(client: TestClient, clinic: Clinic) -> Shop:
    return shop(client, clinic)


@pytest.fixture
def paid(client: TestClient, fake: FakeStripe, db: Database, settings: Settings, s: Shop) -> str:
    return str(paid_booking(client, fake, db, settings, s)["payment"]["id"])


def refund(client: TestClient, clinic: Clinic, payment_id: str, amount: int, **extra: Any) -> Any:
    body = {"payment_id": payment_id, "amount": amount, "reason": "patient cancelled", **extra}
    return client.post(f"{API}/refunds", json=body, headers=clinic.headers)


def balance(client: TestClient, clinic: Clinic, patient: str) -> int:
    return int(
        ok(client.get(f"{API}/patients/{patient}/balance", headers=clinic.headers))["balance"]
    )


def ledger(db: Database) -> list[tuple[str, int]]:
    with db.read() as session:
        rows = session.scalars(sa.select(LedgerEntry).order_by(LedgerEntry.id))
        return [(e.kind, e.amount) for e in rows]


def test_partial_then_full_refund_booked_only_when_stripe_reports_it(
    client: TestClient,
    clinic: Clinic,
    fake: FakeStripe,
    db: Database,
    settings: Settings,
    s: Shop,
    paid: str,
) -> None:
    assert balance(client, clinic, s.patient) == -9000
    first = ok(refund(client, clinic, paid, 3000), 201)
    assert first["status"] == "succeeded" and first["stripe_refund_id"].startswith("re_")
    [call] = fake.calls("POST", "/v1/refunds")
    assert call.idempotency_key == f"cb:{first['id']}:refund:v1"
    assert balance(client, clinic, s.patient) == -9000  # the request alone changes nothing
    deliver(client, fake, s.integration)
    drain(db, settings)
    assert balance(client, clinic, s.patient) == -6000
    rest = ok(refund(client, clinic, paid, 6000), 201)
    deliver(client, fake, s.integration)
    drain(db, settings)
    assert balance(client, clinic, s.patient) == 0
    assert ledger(db) == [("payment", -9000), ("refund", 3000), ("refund", 6000)]
    with db.read() as session:
        refunds = {e.refund_id for e in session.scalars(sa.select(LedgerEntry)) if e.refund_id}
    assert refunds == {first["id"], rest["id"]}
    more = refund(client, clinic, paid, 1)
    assert more.status_code == 422 and more.json()["errors"][0]["field"] == "amount"


def test_two_person_approval_above_the_threshold(
    client: TestClient,
    clinic: Clinic,
    fake: FakeStripe,
    db: Database,
    settings: Settings,
    s: Shop,
    paid: str,
) -> None:
    ok(
        client.patch(
            f"{API}/billing/settings",
            json={"refund_approval_threshold": 5000},
            headers=clinic.headers,
        )
    )
    clerk = add_key(db, clinic, "billing")
    small = ok(refund(client, clerk, paid, 1000), 201)
    assert small["status"] == "succeeded"  # at or under the threshold: straight to Stripe
    big = ok(refund(client, clerk, paid, 6000), 201)
    assert big["status"] == "pending_approval" and len(fake.calls("POST", "/v1/refunds")) == 1
    own = client.post(f"{API}/refunds/{big['id']}/approve", headers=clerk.headers)
    assert own.status_code == 403 and own.json()["type"].endswith("/self-approval")
    # the pending one counts against what is left: 9000 - 1000 - 6000 = 2000
    over = refund(client, clerk, paid, 2001)
    assert over.status_code == 422 and over.json()["errors"][0]["field"] == "amount"
    approved = ok(client.post(f"{API}/refunds/{big['id']}/approve", headers=clinic.headers))
    assert approved["status"] == "succeeded" and approved["approved_by"].startswith("api_key:")
    again = client.post(f"{API}/refunds/{big['id']}/approve", headers=clinic.headers)
    assert again.status_code == 409 and again.json()["type"].endswith("/refund-state")
    third = ok(refund(client, clerk, paid, 2000), 201)
    assert third["status"] == "succeeded"
    with db.read() as session:
        actions = [
            (e.action, e.actor_id, (e.diff or {}).get("reason"))
            for e in session.scalars(
                sa.select(AuditEvent)
                .where(AuditEvent.resource_id == big["id"])
                .order_by(AuditEvent.seq)
            )
        ]
    assert [a[0] for a in actions][:2] == ["refund.request", "refund.approve"]
    assert actions[0][2] == "patient cancelled" and actions[0][1] != actions[1][1]


def test_rejected_refunds_free_the_amount(
    client: TestClient, clinic: Clinic, db: Database, s: Shop, paid: str
) -> None:
    ok(
        client.patch(
            f"{API}/billing/settings", json={"refund_approval_threshold": 0}, headers=clinic.headers
        )
    )
    clerk = add_key(db, clinic, "billing")
    asked = ok(refund(client, clerk, paid, 9000), 201)
    rejected = ok(
        client.post(
            f"{API}/refunds/{asked['id']}/reject",
            json={"reason": "already credited"},
            headers=clinic.headers,
        )
    )
    assert rejected["status"] == "rejected" and rejected["rejection_reason"] == "already credited"
    assert ok(refund(client, clerk, paid, 9000), 201)["status"] == "pending_approval"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"amount": 0}, 422, "amount"),
        ({"amount": -5}, 422, "amount"),
        ({"amount": 100, "currency": "usd"}, 422, "currency"),
        ({"amount": 9001}, 422, "amount"),
        ({"amount": 100, "payment_id": "pay_01ABCDEFGHJKMNPQRSTVWXYZ01"}, 422, "payment_id"),
        ({"amount": 100, "reason": ""}, 422, "reason"),
    ],
)
def test_bad_refunds_name_the_field_and_send_nothing(
    client: TestClient,
    clinic: Clinic,
    fake: FakeStripe,
    paid: str,
    body: dict[str, Any],
    status: int,
    field: str,
) -> None:
    answer = refund(client, clinic, body.pop("payment_id", paid), **body)
    assert answer.status_code == status, answer.text
    assert answer.json()["errors"][0]["field"] == field
    assert fake.calls("POST", "/v1/refunds") == []


def test_a_disputed_charge_cannot_be_refunded_and_a_won_dispute_reverses(
    client: TestClient,
    clinic: Clinic,
    fake: FakeStripe,
    db: Database,
    settings: Settings,
    s: Shop,
    paid: str,
) -> None:
    ok(refund(client, clinic, paid, 1000), 201)  # refund, then dispute
    payment = ok(client.get(f"{API}/payments/{paid}", headers=clinic.headers))
    dispute = fake.dispute(fake.get(payment["stripe_payment_intent_id"])["latest_charge"])
    deliver(client, fake, s.integration)
    drain(db, settings)
    refused = refund(client, clinic, paid, 100)
    assert refused.status_code == 409 and refused.json()["type"].endswith("/charge-disputed")
    assert balance(client, clinic, s.patient) == -9000 + 1000 + 8000  # the money went back
    fake.close_dispute(dispute["id"], "won")
    deliver(client, fake, s.integration)
    drain(db, settings)
    assert balance(client, clinic, s.patient) == -8000
    r = ok(refund(client, clinic, paid, 100), 201)
    assert r["status"] == "succeeded"


def test_stripe_down_leaves_the_refund_submitting_and_the_job_sends_it_once(
    client: TestClient,
    clinic: Clinic,
    fake: FakeStripe,
    db: Database,
    settings: Settings,
    s: Shop,
    paid: str,
) -> None:
    fake.fail(503, times=3)
    asked = ok(refund(client, clinic, paid, 2500), 201)
    assert asked["status"] == "submitting" and fake.of_type("refund") == []
    from datetime import timedelta

    drain(db, settings, horizon=timedelta(minutes=2))
    assert ok(client.get(f"{API}/refunds/{asked['id']}", headers=clinic.headers))["status"] == (
        "succeeded"
    )
    assert len(fake.of_type("refund")) == 1


def test_refunds_of_unpaid_payments_and_permissions(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, s: Shop
) -> None:
    from tests.payments_support import book

    unpaid = ok(book(client, s), 201)["payment"]["id"]
    refused = refund(client, clinic, unpaid, 100)
    assert refused.status_code == 409 and refused.json()["type"].endswith("/payment-state")
    desk = add_key(db, clinic, "front_desk")
    denied = refund(client, desk, unpaid, 100)
    assert denied.status_code == 403 and denied.json()["permission"] == "billing:refund"


def test_another_clinic_cannot_see_or_refund(
    client: TestClient, clinic: Clinic, paid: str, make_clinic: Callable[..., Clinic]
) -> None:
    asked = ok(refund(client, clinic, paid, 100), 201)
    other = make_clinic("Other Clinic")
    assert client.get(f"{API}/refunds/{asked['id']}", headers=other.headers).status_code == 404
    assert (
        client.post(f"{API}/refunds/{asked['id']}/approve", headers=other.headers).status_code
        == 404
    )
    theirs = refund(client, other, paid, 100)
    assert theirs.status_code == 422 and theirs.json()["errors"][0]["field"] == "payment_id"


def test_outbound_events_are_published(
    client: TestClient,
    clinic: Clinic,
    fake: FakeStripe,
    db: Database,
    settings: Settings,
    s: Shop,
) -> None:
    now = datetime.now(UTC)
    with db.write() as session:
        session.add(
            WebhookEndpoint(
                id=new_id("whe"),
                tenant_id=clinic.id,
                url="https://pms.example.test/hook",
                event_types=["payment.*", "refund.*", "invoice.*"],
                secret="x",
                enabled=True,
                created_at=now,
                updated_at=now,
            )
        )
    made = paid_booking(client, fake, db, settings, s)
    ok(refund(client, clinic, made["payment"]["id"], 100), 201)
    inv = ok(
        client.post(
            f"{API}/invoices",
            headers=clinic.headers,
            json={
                "patient_id": s.patient,
                "booking_id": made["id"],
                "lines": [{"service_id": s.service, "tax_code": "exempt"}],
            },
        ),
        201,
    )
    final = ok(client.post(f"{API}/invoices/{inv['id']}/finalize", headers=clinic.headers))
    assert final["status"] == "paid" and final["amount_paid"] == 9000  # the booking's payment
    with db.read() as session:
        sent = session.scalars(sa.select(WebhookDelivery).order_by(WebhookDelivery.created_at))
        types = [d.event_type for d in sent]
        payloads = {
            d.event_type: d.payload["data"] for d in session.scalars(sa.select(WebhookDelivery))
        }
    assert types == ["payment.succeeded", "refund.created", "invoice.paid"]
    assert payloads["payment.succeeded"]["amount_received"] == 9000
    assert "first_name" not in str(payloads)  # ids and amounts, no patient details
