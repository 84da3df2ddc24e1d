"""Front desk card payments (Stripe Terminal): connection tokens, card-present
PaymentIntents captured by staff and posted to the patient's ledger once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.audit.models import AuditEvent
from clinicbridge.core.context import Ctx
from clinicbridge.db.engine import Database
from clinicbridge.payments import transfers
from clinicbridge.payments.models import LedgerEntry
from clinicbridge.scheduling.bookings import complete_booking
from clinicbridge.settings import Settings
from clinicbridge.testing.stripe import FakeStripe
from tests.conftest import Clinic, add_key
from tests.payments_support import API, KEY, STRIPE_BASE, Shop, book, deliver, drain, fake, ok, shop

__all__ = ["fake"]


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return dict(response.json())


def fields(response: Any) -> list[str]:
    return [e["field"] for e in problem(response, 422).get("errors", [])]


def ledger(db: Database) -> list[tuple[str, int, str]]:
    with db.read() as session:
        rows = session.execute(
            sa.select(LedgerEntry.kind, LedgerEntry.amount, LedgerEntry.description)
        )
        return [(k, a, d) for k, a, d in rows]


def desk(db: Database, s: Shop) -> dict[str, str]:
    return add_key(db, s.clinic, "front_desk").headers


def test_front_desk_gets_a_connection_token(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database
) -> None:
    s = shop(client, clinic)
    h = desk(db, s)
    got = ok(client.post(f"{API}/terminal/connection-tokens", json={}, headers=h), 201)
    assert got["secret"].startswith("pst_test_") and got["location"] is None
    body = {"location": "tml_front_desk"}
    got = ok(client.post(f"{API}/terminal/connection-tokens", json=body, headers=h), 201)
    assert got["location"] == "tml_front_desk"
    assert [c.params for c in fake.calls("POST", "/v1/terminal/connection_tokens")] == [
        {},
        {"location": "tml_front_desk"},
    ]
    clinician = add_key(db, clinic, "clinician").headers  # no billing:terminal
    problem(client.post(f"{API}/terminal/connection-tokens", json={}, headers=clinician), 403)


def test_card_present_payment_captured_at_the_desk_is_posted_once(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    s = shop(client, clinic)
    h = desk(db, s)
    made = ok(
        client.post(
            f"{API}/terminal/payments", json={"patient_id": s.patient, "amount": 4000}, headers=h
        ),
        201,
    )
    assert made["method"] == "card_present" and made["client_secret"]
    intent_id = made["stripe_payment_intent_id"]
    intent = fake.get(intent_id)
    assert intent["payment_method_types"] == ["card_present"]
    assert intent["capture_method"] == "manual" and intent["amount"] == 4000
    capture = f"{API}/terminal/payments/{made['id']}/capture"
    doc = problem(client.post(capture, headers=h), 409)  # no card presented yet
    assert doc["type"].endswith("/payment-state")
    # the reader takes the card (Stripe's server-driven flow and its test helper)
    reader = fake.add_reader()
    with httpx.Client(
        transport=httpx.MockTransport(fake),
        base_url=STRIPE_BASE,
        headers={"Authorization": f"Bearer {KEY}"},
    ) as stripe_http:
        stripe_http.post(
            f"/v1/terminal/readers/{reader}/process_payment_intent",
            data={"payment_intent": intent_id},
        ).raise_for_status()
        stripe_http.post(
            f"/v1/test_helpers/terminal/readers/{reader}/present_payment_method"
        ).raise_for_status()
    assert fake.get(intent_id)["status"] == "requires_capture"
    deliver(client, fake, s.integration)
    drain(db, settings)
    got = ok(client.get(f"{API}/payments/{made['id']}", headers=clinic.headers))
    assert got["status"] == "processing" and ledger(db) == []
    captured = ok(client.post(capture, headers=h))
    assert captured["status"] == "succeeded" and captured["amount_received"] == 4000
    assert ledger(db) == [("payment", -4000, "Card payment at the front desk")]
    with db.read() as session:
        captures = session.scalars(
            sa.select(AuditEvent.actor_type).where(AuditEvent.action == "payment.capture")
        ).all()
    assert captures == ["api_key"]  # who captured it at the desk
    deliver(client, fake, s.integration)  # payment_intent.succeeded converges on the same rows
    drain(db, settings)
    assert ledger(db) == [("payment", -4000, "Card payment at the front desk")]
    problem(client.post(capture, headers=h), 409)  # captured already
    balance = ok(client.get(f"{API}/patients/{s.patient}/balance", headers=clinic.headers))
    assert balance["balance"] == -4000


def test_bad_input_and_other_clinics(
    client: TestClient, make_clinic: Callable[..., Clinic], fake: FakeStripe, db: Database
) -> None:
    ours, theirs = make_clinic("Maple"), make_clinic("Birch")
    s, t = shop(client, ours), shop(client, theirs)
    h = desk(db, s)
    url = f"{API}/terminal/payments"
    for amount in (0, -5):
        body = {"patient_id": s.patient, "amount": amount}
        assert fields(client.post(url, json=body, headers=h)) == ["amount"]
    body = {"patient_id": t.patient, "amount": 100}  # another clinic's patient
    assert fields(client.post(url, json=body, headers=h)) == ["patient_id"]
    body = {"patient_id": s.patient, "amount": 100, "booking_id": "bkg_01JD0000000000000000000000"}
    assert fields(client.post(url, json=body, headers=h)) == ["booking_id"]
    assert fake.calls("POST", "/v1/payment_intents") == []
    theirs_made = ok(
        client.post(url, json={"patient_id": t.patient, "amount": 100}, headers=desk(db, t)), 201
    )
    problem(client.post(f"{url}/{theirs_made['id']}/capture", headers=h), 404)
    problem(client.post(f"{url}/pay_01JD0000000000000000000000/capture", headers=h), 404)
    web = ok(book(client, s, payment="deposit"), 201)  # a card payment made online
    doc = problem(client.post(f"{url}/{web['payment']['id']}/capture", headers=h), 409)
    assert doc["type"].endswith("/payment-state")


def test_paying_at_the_desk_after_the_visit_pays_the_provider(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    s = shop(client, clinic)
    h = desk(db, s)
    problem(client.post(f"{API}/providers/{s.provider}/payout-account", headers=h), 403)
    made = ok(
        client.post(f"{API}/providers/{s.provider}/payout-account", headers=clinic.headers), 201
    )
    fake.onboard(made["stripe_account_id"])
    ok(client.post(f"{API}/providers/{s.provider}/payout-account/refresh", headers=clinic.headers))
    rule = {"provider_share_bps": 6000}
    ok(client.put(f"{API}/services/{s.service}/payout-rule", json=rule, headers=clinic.headers))
    booking = ok(book(client, s, payment="none"), 201)
    later = datetime.now().astimezone() + timedelta(days=5)
    with db.write() as session:
        complete_booking(session, Ctx.system(clinic.id, "test", later), booking["id"])
    drain(db, settings, horizon=timedelta(days=6))  # no payment yet: nothing to transfer
    assert fake.calls("POST", "/v1/transfers") == []
    body = {"patient_id": s.patient, "amount": 9000, "booking_id": booking["id"]}
    paid = ok(client.post(f"{API}/terminal/payments", json=body, headers=h), 201)
    fake.present_card(paid["stripe_payment_intent_id"])
    captured = ok(client.post(f"{API}/terminal/payments/{paid['id']}/capture", headers=h))
    assert captured["status"] == "succeeded"
    assert captured["attention"] is None  # a visit that took place is not "released"
    with db.write() as session:
        from clinicbridge.jobs import queue

        queue.enqueue(session, transfers.SWEEP_KIND, now=datetime.now().astimezone())
    drain(db, settings)
    sent = fake.calls("POST", "/v1/transfers")
    assert [c.params["amount"] for c in sent] == ["5400"]


def test_reconcile_leaves_a_desk_payment_for_a_booked_visit_open(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    """The payment's booking holds no slot for it: the reconcile job (due two minutes
    later) must not cancel the intent while the patient is at the desk."""
    s = shop(client, clinic)
    h = desk(db, s)
    booking = ok(book(client, s, payment="none"), 201)
    assert booking["status"] in ("booked", "confirmed")
    body = {"patient_id": s.patient, "amount": 1500, "booking_id": booking["id"]}
    paid = ok(client.post(f"{API}/terminal/payments", json=body, headers=h), 201)
    ran = drain(db, settings, horizon=timedelta(minutes=3))
    assert "payments.reconcile" in ran
    assert (
        fake.calls("POST", f"/v1/payment_intents/{paid['stripe_payment_intent_id']}/cancel") == []
    )
    assert fake.get(paid["stripe_payment_intent_id"])["status"] == "requires_payment_method"
    fake.present_card(paid["stripe_payment_intent_id"])
    captured = ok(client.post(f"{API}/terminal/payments/{paid['id']}/capture", headers=h))
    assert captured["status"] == "succeeded" and captured["attention"] is None
