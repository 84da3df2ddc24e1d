"""Pay at booking against the fake Stripe: the hold, the PaymentIntent (or Checkout
Session) with an idempotency key of our ids, confirmation by the signed webhook through
the real inbox, failure and expiry releasing the hold, Stripe outages and crashes that
never charge twice, unknown intents kept, and clinics kept apart."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.audit.models import AuditEvent
from clinicbridge.core.context import Ctx
from clinicbridge.db.engine import Database
from clinicbridge.integrations.models import Alert
from clinicbridge.payments import checkout
from clinicbridge.payments.lifecycle import RECEIPT_KIND
from clinicbridge.payments.models import LedgerEntry, Payment
from clinicbridge.scheduling import bookings
from clinicbridge.scheduling.models import Booking
from clinicbridge.settings import Settings
from clinicbridge.testing.stripe import FakeStripe
from clinicbridge.testing.stripe_wire import StripeError
from tests.conftest import Clinic
from tests.payments_support import (
    API,
    book,
    deliver,
    drain,
    fake,
    ok,
    post_event,
    shop,
    sign,
)

__all__ = ["fake"]


def status_of(client: TestClient, clinic: Clinic, booking_id: str) -> str:
    return str(ok(client.get(f"{API}/bookings/{booking_id}", headers=clinic.headers))["status"])


def balance(client: TestClient, clinic: Clinic, patient: str) -> int:
    return int(
        ok(client.get(f"{API}/patients/{patient}/balance", headers=clinic.headers))["balance"]
    )


def ledger_rows(db: Database) -> list[tuple[str, int]]:
    with db.read() as session:
        return [(e.kind, e.amount) for e in session.scalars(sa.select(LedgerEntry))]


def test_deposit_holds_the_slot_until_the_signed_webhook_confirms_it(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    s = shop(client, clinic)
    made = ok(book(client, s), 201)
    assert made["status"] == "pending_payment" and made["hold_expires_at"] is not None
    payment = made["payment"]
    assert (payment["amount"], payment["currency"], payment["method"]) == (2500, "cad", "card")
    intent = fake.get(payment["stripe_payment_intent_id"])
    assert payment["client_secret"] == intent["client_secret"]
    assert intent["metadata"]["booking_id"] == made["id"]
    assert intent["metadata"]["payment_id"] == payment["id"]
    [create] = fake.calls("POST", "/v1/payment_intents")
    assert create.idempotency_key == f"cb:{payment['id']}:pi:v1"
    assert create.stripe_version == "2024-06-20"
    assert balance(client, clinic, s.patient) == 0  # nothing paid yet
    # the slot is held: someone else cannot take it
    taken = book(client, s, payment="none")
    assert taken.status_code == 409

    fake.confirm(intent["id"], "pm_card_visa")  # the patient pays with Stripe.js
    deliver(client, fake, s.integration)
    ran = drain(db, settings)
    assert status_of(client, clinic, made["id"]) == "confirmed"
    assert RECEIPT_KIND in ran
    paid = ok(client.get(f"{API}/payments/{payment['id']}", headers=clinic.headers))
    assert (paid["status"], paid["amount_received"]) == ("succeeded", 2500)
    assert balance(client, clinic, s.patient) == -2500  # a credit until the visit is invoiced
    assert ledger_rows(db) == [("payment", -2500)]


def test_duplicates_replays_and_any_order_book_once(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    s = shop(client, clinic)
    made = ok(book(client, s), 201)
    fake.confirm(made["payment"]["stripe_payment_intent_id"], "pm_card_visa")
    pairs = fake.deliveries(sign)
    for body, header in reversed(pairs):  # succeeded before created
        post_event(client, s.integration, body, header)
    for body, header in pairs:  # and every event again (Stripe retries)
        post_event(client, s.integration, body, header)
    drain(db, settings)
    events = ok(client.get(f"{API}/webhook-events", headers=clinic.headers))["data"]
    for event in events:  # staff replay all of them
        ok(client.post(f"{API}/webhook-events/{event['id']}/replay", headers=clinic.headers), 200)
    drain(db, settings)
    assert status_of(client, clinic, made["id"]) == "confirmed"
    assert ledger_rows(db) == [("payment", -2500)]


def test_a_declined_card_releases_the_hold_and_cancels_the_intent(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    s = shop(client, clinic)
    made = ok(book(client, s), 201)
    intent_id = made["payment"]["stripe_payment_intent_id"]
    with pytest.raises(StripeError):  # what Stripe.js shows the patient
        fake.confirm(intent_id, "pm_card_chargeDeclinedInsufficientFunds")
    deliver(client, fake, s.integration)
    drain(db, settings, kinds=("webhooks.process",))
    events = ok(client.get(f"{API}/webhook-events", headers=clinic.headers))["data"]
    [failed] = [e for e in events if e["type"] == "payment_intent.payment_failed"]
    ok(client.post(f"{API}/webhook-events/{failed['id']}/replay", headers=clinic.headers))
    drain(db, settings, kinds=("webhooks.process",))  # handled twice before the cancel
    with db.read() as session:
        audited = session.scalars(
            sa.select(AuditEvent.action).where(AuditEvent.resource_id == made["payment"]["id"])
        ).all()
    assert audited.count("payment.failed") == 1  # a duplicate changes nothing
    drain(db, settings)
    assert status_of(client, clinic, made["id"]) == "expired"
    payment = ok(client.get(f"{API}/payments/{made['payment']['id']}", headers=clinic.headers))
    assert payment["status"] == "canceled" and payment["failure_code"] == "insufficient_funds"
    assert fake.get(intent_id)["status"] == "canceled"  # cannot be paid for a released slot
    assert ok(book(client, s, payment="none"), 201)["status"] == "booked"  # the time is free
    assert ledger_rows(db) == []


def test_stripe_down_keeps_the_hold_answers_503_and_the_retry_charges_once(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database
) -> None:
    s = shop(client, clinic)
    fake.fail(503, times=3)  # the outbound client's three attempts
    refused = book(client, s)
    assert refused.status_code == 503, refused.text
    problem = refused.json()
    assert problem["type"].endswith("/payment-provider-unavailable")
    assert problem["retryable"] is True and problem["retry"].endswith("/payment")
    booking_id = problem["booking_id"]
    assert status_of(client, clinic, booking_id) == "pending_payment"  # still held
    assert fake.of_type("payment_intent") == []
    again = ok(client.post(f"{API}/bookings/{booking_id}/payment", headers=clinic.headers))
    assert again["client_secret"] and again["status"] == "requires_payment"
    once_more = ok(client.post(f"{API}/bookings/{booking_id}/payment", headers=clinic.headers))
    assert once_more["stripe_payment_intent_id"] == again["stripe_payment_intent_id"]
    assert len(fake.of_type("payment_intent")) == 1


def test_a_timeout_after_stripe_created_the_intent_is_retried_with_the_same_key(
    client: TestClient, clinic: Clinic, fake: FakeStripe
) -> None:
    s = shop(client, clinic)
    fake.fail_timeout()  # the intent is made, the answer is lost
    made = ok(book(client, s), 201)
    assert len(fake.of_type("payment_intent")) == 1
    calls = fake.calls("POST", "/v1/payment_intents")
    assert len(calls) == 2 and calls[1].replayed and len({c.idempotency_key for c in calls}) == 1
    assert made["payment"]["stripe_payment_intent_id"] == fake.of_type("payment_intent")[0]["id"]


def test_a_crash_before_stripe_was_called_is_finished_by_the_reconcile_job(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    s = shop(client, clinic)
    now = datetime.now(UTC)
    with db.write() as session:  # step 1 committed, then the process died
        ctx = Ctx.system(clinic.id, "test", now)
        booking = bookings.create_booking(
            session,
            ctx,
            service_id=s.service,
            provider_id=s.provider,
            start=datetime.fromisoformat(s.slots[0]),
            patient_id=s.patient,
            hold_minutes=15,
            pending_payment=True,
        )
        payment_id = checkout.open_booking_payment(
            session, ctx, booking, payment="full", method="card"
        ).id
    assert fake.of_type("payment_intent") == []
    drain(db, settings, horizon=timedelta(minutes=3))
    [intent] = fake.of_type("payment_intent")
    assert intent["amount"] == 9000 and intent["metadata"]["payment_id"] == payment_id
    fake.confirm(intent["id"], "pm_card_visa")
    deliver(client, fake, s.integration)
    drain(db, settings)
    assert status_of(client, clinic, booking.id) == "confirmed"


def test_a_lost_webhook_is_made_up_for_by_the_reconcile_job(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    s = shop(client, clinic)
    made = ok(book(client, s), 201)
    fake.confirm(made["payment"]["stripe_payment_intent_id"], "pm_card_visa")
    fake.deliveries(sign)  # dropped on the way: never posted
    drain(db, settings, horizon=timedelta(minutes=3))
    assert status_of(client, clinic, made["id"]) == "confirmed"
    assert ledger_rows(db) == [("payment", -2500)]


def test_paying_a_cancelled_booking_is_a_409_and_cancelling_cancels_the_intent(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    s = shop(client, clinic)
    made = ok(book(client, s), 201)
    ok(
        client.post(
            f"{API}/bookings/{made['id']}/cancel",
            json={"reason": "changed plans"},
            headers=clinic.headers,
        )
    )
    refused = client.post(f"{API}/bookings/{made['id']}/payment", headers=clinic.headers)
    assert refused.status_code == 409 and refused.json()["type"].endswith("/booking-state")
    drain(db, settings)
    assert fake.get(made["payment"]["stripe_payment_intent_id"])["status"] == "canceled"


def test_an_expired_hold_releases_the_slot_and_a_late_payment_is_flagged(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    s = shop(client, clinic)
    made = ok(book(client, s), 201)
    intent_id = made["payment"]["stripe_payment_intent_id"]
    fake.confirm(intent_id, "pm_card_visa")  # paid, but the webhook is slow...
    late = fake.deliveries(sign)
    with db.write() as session:  # ...and the hold runs out first
        session.execute(
            sa.update(Booking)
            .where(Booking.id == made["id"])
            .values(hold_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    with db.write() as session:
        bookings._expire_due_holds(session, datetime.now(UTC))
    for body, header in late:
        post_event(client, s.integration, body, header)
    drain(db, settings)
    assert status_of(client, clinic, made["id"]) == "expired"
    payment = ok(client.get(f"{API}/payments/{made['payment']['id']}", headers=clinic.headers))
    assert payment["status"] == "succeeded" and payment["attention"] == "booking_released"
    assert balance(client, clinic, s.patient) == -2500  # the money is the patient's credit


def test_a_payment_link_for_sms_or_voice(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    s = shop(client, clinic)
    made = ok(book(client, s, payment="full", payment_method="link"), 201)
    payment = made["payment"]
    assert payment["checkout_url"].startswith("https://checkout.stripe.test/c/pay/cs_test_")
    assert payment["client_secret"] is None and payment["amount"] == 9000
    [session] = fake.of_type("checkout.session")
    assert session["expires_at"] >= int(datetime.now(UTC).timestamp()) + 30 * 60 - 5
    fake.complete_checkout(session["id"])
    deliver(client, fake, s.integration)  # checkout.session.completed and payment_intent.*
    drain(db, settings)
    assert status_of(client, clinic, made["id"]) == "confirmed"
    assert ledger_rows(db) == [("payment", -9000)]


def test_an_unknown_intent_is_kept_flagged_and_alerted(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    s = shop(client, clinic)
    with fake._lock:  # a payment made outside ClinicBridge on the same Stripe account
        outside = fake._create_intent({"amount": "1234", "currency": "cad"})
        fake.confirm(outside["id"], "pm_card_visa")
    deliver(client, fake, s.integration)
    drain(db, settings)
    unmatched = ok(client.get(f"{API}/payments/unmatched", headers=clinic.headers))["data"]
    assert {u["type"] for u in unmatched} >= {"payment_intent.succeeded"}
    assert {u["object_id"] for u in unmatched} == {outside["id"]}
    with db.read() as session:
        [alert] = session.scalars(sa.select(Alert).where(Alert.rule == "stripe_unmatched_events"))
    assert alert.status == "open" and alert.subject_id == s.integration
    assert ledger_rows(db) == []


def test_another_clinics_event_never_touches_this_clinics_payment(
    client: TestClient,
    clinic: Clinic,
    fake: FakeStripe,
    db: Database,
    settings: Settings,
    make_clinic: Callable[..., Clinic],
) -> None:
    s = shop(client, clinic)
    made = ok(book(client, s), 201)
    other = make_clinic("Other Clinic")
    other_shop = shop(client, other)
    # clinic B's account reports a payment whose metadata names clinic A's payment
    with fake._lock:
        forged = fake._create_intent(
            {"amount": "2500", "currency": "cad", "metadata": {"payment_id": made["payment"]["id"]}}
        )
        fake.confirm(forged["id"], "pm_card_visa")
    deliver(client, fake, other_shop.integration)
    drain(db, settings)
    assert status_of(client, clinic, made["id"]) == "pending_payment"
    assert ok(client.get(f"{API}/payments/unmatched", headers=other.headers))["data"]
    assert (
        client.get(f"{API}/payments/{made['payment']['id']}", headers=other.headers).status_code
        == 404
    )
    assert ledger_rows(db) == []


def test_bad_payment_requests_name_the_field_and_write_nothing(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database
) -> None:
    s = shop(client, clinic)
    with db.write() as session:  # no deposit on this service any more
        session.execute(sa.text("UPDATE services SET deposit_minor = NULL"))
    refused = book(client, s)
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "payment"
    wrong = book(client, s, payment="some")
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "payment"
    with db.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Booking)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(Payment)) == 0
    assert fake.requests == []


def test_without_a_stripe_integration_payment_is_refused(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database
) -> None:
    s = shop(client, clinic)
    ok(client.delete(f"{API}/integrations/{s.integration}", headers=clinic.headers), 204)
    refused = book(client, s)
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "payment"
    assert json.dumps(refused.json()).count("sk_test") == 0
