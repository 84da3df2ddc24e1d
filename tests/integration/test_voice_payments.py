"""The voice receptionist's payment tools over the Vapi endpoint: getPatientBalance only
for a verified caller (audited, nothing said otherwise), processPayment sending a
Stripe Checkout link (the fake Stripe) by SMS or e-mail through messaging, never
taking card numbers, and the link reused rather than a second payment opened."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.audit.models import AuditEvent
from clinicbridge.core.clock import FakeClock
from clinicbridge.db.engine import Database
from clinicbridge.messaging.models import Message
from clinicbridge.payments import links
from clinicbridge.payments.models import Payment
from clinicbridge.settings import Settings
from clinicbridge.testing.stripe import FakeStripe
from clinicbridge.voice.payment_tools import spoken_money
from tests.integration.test_voice_vapi import (
    CALLER,
    IDENTITY,
    Call,
    Practice,
    call,
    practice,
    vclient,
)
from tests.payments_support import API, deliver, drain, fake, ok, stripe_integration

__all__ = ["call", "fake", "practice", "vclient"]
CARD = "4242 4242 4242 4242"


@pytest.fixture
def clock() -> FakeClock:
    # Real time: the fake Stripe's Checkout Sessions expire against the wall clock.
    return FakeClock(datetime.now(UTC))


@pytest.fixture
def billed(vclient: TestClient, practice: Practice, fake: FakeStripe) -> str:
    """Stripe and SMS for the clinic, and a finalized invoice of 120.00 to the patient."""
    h = practice.clinic.headers
    stripe_integration(vclient, practice.clinic)
    sms = {
        "connector": "twilio",
        "name": "Clinic SMS",
        "credentials": {"account_sid": "AC" + "0" * 32, "auth_token": "t" * 32},
        "settings": {"api_base": "https://twilio.test", "from_number": "+15145550100"},
    }
    ok(vclient.post(f"{API}/integrations", json=sms, headers=h), 201)
    body = {
        "patient_id": practice.patient_id,
        "lines": [{"description": "Orthotics", "unit_price": 12000, "tax_code": "exempt"}],
    }
    invoice = ok(vclient.post(f"{API}/invoices", json=body, headers=h), 201)
    return str(ok(vclient.post(f"{API}/invoices/{invoice['id']}/finalize", headers=h))["number"])


def _payments(db: Database) -> list[Payment]:
    with db.read() as session:
        return list(session.scalars(sa.select(Payment).order_by(Payment.created_at)))


def _messages(db: Database) -> list[Message]:
    with db.read() as session:
        return list(session.scalars(sa.select(Message).order_by(Message.id)))


def _reads(db: Database, purpose: str) -> list[AuditEvent]:
    with db.read() as session:
        rows = session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "patient.read"))
        return [e for e in rows if (e.diff or {}).get("purpose") == purpose]


def _second_invoice(client: TestClient, practice: Practice, amount: int) -> None:
    h = practice.clinic.headers
    body = {
        "patient_id": practice.patient_id,
        "lines": [{"description": "Follow-up", "unit_price": amount, "tax_code": "exempt"}],
    }
    made = ok(client.post(f"{API}/invoices", json=body, headers=h), 201)
    ok(client.post(f"{API}/invoices/{made['id']}/finalize", headers=h))


def test_spoken_money() -> None:
    assert spoken_money(12000, "cad") == "120.00 Canadian dollars"
    assert spoken_money(-2550, "eur") == "25.50 euros"
    assert spoken_money(1500, "jpy") == "1,500 Japanese yen"


def test_balance_needs_a_verified_caller_and_says_nothing_else(
    call: Call, billed: str, db: Database
) -> None:
    [result] = call(("getPatientBalance", {}), number=None)
    assert result["success"] is False and result["error"] == "verification_required"
    assert "confirm who you are" in result["message"]
    assert "120" not in str(result) and "balance" not in result
    [wrong] = call(
        ("getPatientBalance", {**IDENTITY, "date_of_birth": "1990-01-01"}),
        number=None,
        call_id="call-wrong",
    )
    assert wrong["error"] == "verification_failed" and "120" not in str(wrong)
    assert _reads(db, "voice_balance") == []


def test_balance_of_a_verified_caller_is_spoken_and_audited(
    call: Call, billed: str, db: Database, practice: Practice
) -> None:
    [found, balance] = call(("searchPatients", IDENTITY), ("getPatientBalance", {}), number=None)
    assert found["found"] is True
    assert balance["success"] is True
    assert balance["message"].startswith("Your balance is 120.00 Canadian dollars.")
    assert balance["balance"] == 12000 and balance["currency"] == "cad"
    [event] = _reads(db, "voice_balance")
    assert event.resource_id == practice.patient_id and event.actor_type == "integration"


def test_payment_link_by_sms_for_the_open_balance(
    call: Call,
    billed: str,
    db: Database,
    settings: Settings,
    fake: FakeStripe,
    practice: Practice,
    vclient: TestClient,
) -> None:
    # The calling number is on file: the caller is verified by it.
    [sent] = call(("processPayment", {}), number=CALLER)
    assert sent["success"] is True, sent
    assert sent["channel"] == "sms" and sent["to"] == "***0199"
    assert "120.00 Canadian dollars by text message" in sent["message"]
    assert "ending in 0 1 9 9" in sent["message"] and "never take card numbers" in sent["message"]
    assert CALLER not in str(sent)
    [payment] = _payments(db)
    # One open invoice asks for exactly the balance: the payment is for it (settles it).
    assert (payment.purpose, payment.method, payment.amount) == ("invoice", "link", 12000)
    assert payment.invoice_id == sent["invoice_id"] is not None
    assert payment.status == "creating" and _messages(db) == []  # sent after the call commits

    drain(db, settings, kinds=(links.SEND_KIND,))
    [session_call] = fake.calls("POST", "/v1/checkout/sessions")
    assert session_call.idempotency_key == payment.idempotency_key
    [message] = _messages(db)
    [payment] = _payments(db)
    assert message.kind == "payment.link" and message.channel == "sms"
    assert message.to_address == CALLER and message.status == "queued"
    assert payment.checkout_url and payment.checkout_url in message.body
    assert "120" in message.body and "4242" not in message.body

    # Asking again while the link is open: the same payment, the message not repeated.
    [again] = call(("processPayment", {}), number=CALLER, call_id="call-2")
    assert again["payment_id"] == payment.id
    drain(db, settings, kinds=(links.SEND_KIND,))
    assert len(_payments(db)) == 1 and len(_messages(db)) == 1
    assert len(fake.calls("POST", "/v1/checkout/sessions")) == 1

    # Paid on the page: the webhook books it, the balance is 0.
    fake.complete_checkout(payment.stripe_checkout_session_id)
    deliver(vclient, fake, stripe_id(vclient, practice))
    drain(db, settings, kinds=("webhooks.process", "payments.reconcile"))
    url = f"{API}/patients/{practice.patient_id}/balance"
    balance = ok(vclient.get(url, headers=practice.clinic.headers))
    assert balance["balance"] == 0
    invoice = ok(
        vclient.get(f"{API}/invoices/{payment.invoice_id}", headers=practice.clinic.headers)
    )
    assert invoice["status"] == "paid"


def test_a_balance_over_several_invoices_is_paid_as_a_balance(
    fake: FakeStripe,
    call: Call,
    billed: str,
    db: Database,
    settings: Settings,
    vclient: TestClient,
    practice: Practice,
) -> None:
    h = practice.clinic.headers
    _second_invoice(vclient, practice, 3000)
    [sent] = call(("processPayment", {"channel": "text"}), number=CALLER)
    assert sent["success"] is True and "150.00 Canadian dollars" in sent["message"]
    [payment] = _payments(db)
    assert (payment.purpose, payment.amount, payment.invoice_id) == ("balance", 15000, None)
    drain(db, settings, kinds=(links.SEND_KIND,))
    [message] = _messages(db)
    assert message.kind == "payment.link" and message.channel == "sms"
    # Paid: the ledger is square (the invoices stay open: no single one was paid) and
    # the receipt names what was paid for.
    [payment] = _payments(db)
    fake.complete_checkout(payment.stripe_checkout_session_id)
    deliver(vclient, fake, stripe_id(vclient, practice))
    drain(db, settings, kinds=("webhooks.process",))
    assert (
        ok(vclient.get(f"{API}/patients/{practice.patient_id}/balance", headers=h))["balance"] == 0
    )
    receipt = vclient.get(f"{API}/payments/{payment.id}/receipt", headers=h)
    assert receipt.status_code == 200 and "Account balance" in receipt.text


def stripe_id(client: TestClient, practice: Practice) -> str:
    rows = ok(client.get(f"{API}/integrations", headers=practice.clinic.headers))["data"]
    return str(next(r["id"] for r in rows if r["connector"] == "stripe"))


def test_payment_link_by_email_for_a_named_invoice(
    call: Call,
    billed: str,
    db: Database,
    settings: Settings,
    practice: Practice,
    vclient: TestClient,
) -> None:
    h = practice.clinic.headers
    mail = {
        "connector": "smtp",
        "name": "Front desk mail",
        "settings": {"host": "127.0.0.1", "port": 2525, "security": "none",
                     "from_email": "rdv@clinic.example"},
    }  # fmt: skip
    ok(vclient.post(f"{API}/integrations", json=mail, headers=h), 201)
    patch = {"emails": ["helene.tremblay@example.com"]}
    ok(vclient.patch(f"{API}/patients/{practice.patient_id}", json=patch, headers=h))
    [sent] = call(
        ("processPayment", {**IDENTITY, "channel": "e-mail", "invoice_number": billed.lower()}),
        number=None,
    )
    assert sent["success"] is True, sent
    assert sent["channel"] == "email" and sent["to"] == "h***@example.com"
    assert "by e-mail to your e-mail address at example.com" in sent["message"]
    [payment] = _payments(db)
    assert payment.purpose == "invoice" and payment.invoice_id == sent["invoice_id"]
    drain(db, settings, kinds=(links.SEND_KIND,))
    [message] = _messages(db)
    assert message.channel == "email" and message.kind == "payment.link"
    assert message.subject == "Your payment link from Maple Family Clinic"
    assert "Pay securely" in (message.html or "")


def test_payment_refusals(call: Call, billed: str, db: Database) -> None:
    [card] = call(("processPayment", {**IDENTITY, "card_number": CARD}), number=None)
    assert card["error"] == "card_details_refused" and "4242" not in str(card)
    [card_in_text] = call(("processPayment", {**IDENTITY, "note": CARD}), number=None)
    assert card_in_text["error"] == "card_details_refused"
    [cvv] = call(("processPayment", {**IDENTITY, "CVV": "123"}), number=None)
    assert cvv["error"] == "card_details_refused" and "123" not in str(cvv)
    [unverified] = call(("processPayment", {}), number=None, call_id="call-anon")
    assert unverified["error"] == "verification_required" and "120" not in str(unverified)
    [no_mail] = call(("processPayment", {**IDENTITY, "channel": "email"}), number=None)
    assert no_mail["error"] == "channel_unavailable" and "text message" in no_mail["message"]
    [bad_invoice] = call(("processPayment", {**IDENTITY, "invoice_number": "INV-9999"}))
    assert bad_invoice["error"] == "invoice_not_found"
    assert _payments(db) == [] and _messages(db) == []


def test_nothing_owed_and_no_stripe(
    call: Call, practice: Practice, vclient: TestClient, db: Database
) -> None:
    [balance] = call(("getPatientBalance", IDENTITY), number=None)
    assert balance["message"] == "You have no balance owing. Your account is fully paid."
    [pay] = call(("processPayment", IDENTITY), number=None)
    assert pay["error"] == "not_available"  # the clinic has no Stripe: nothing is opened
    assert "does not take payments by link" in pay["message"]
    assert _payments(db) == []


def test_a_new_balance_link_expires_the_older_one(
    fake: FakeStripe,
    call: Call,
    billed: str,
    db: Database,
    settings: Settings,
    vclient: TestClient,
    practice: Practice,
) -> None:
    """The 120.00 link is open when a 30.00 invoice is added and the caller asks again:
    the new 150.00 link expires the old one at Stripe, so 120.00 cannot be paid twice."""
    [first] = call(("processPayment", {}), number=CALLER)
    drain(db, settings, kinds=(links.SEND_KIND,))
    [old] = _payments(db)
    assert old.amount == 12000 and old.status == "requires_payment"
    _second_invoice(vclient, practice, 3000)
    [again] = call(("processPayment", {}), number=CALLER, call_id="call-2")
    assert again["success"] is True and "150.00 Canadian dollars" in again["message"]
    assert again["payment_id"] != first["payment_id"]
    drain(db, settings, kinds=(links.SEND_KIND, "payments.cancel_at_stripe"))
    (old_row,) = [p for p in _payments(db) if p.id == old.id]
    (new_row,) = [p for p in _payments(db) if p.id != old.id]
    assert old_row.status == "canceled"
    assert (new_row.amount, new_row.purpose, new_row.status) == (
        15000,
        "balance",
        "requires_payment",
    )
    [expired] = fake.calls("POST", f"/v1/checkout/sessions/{old.stripe_checkout_session_id}/expire")
    assert expired.idempotency_key == f"cb:{old.id}:cancel:v1"
    with pytest.raises(Exception, match="no longer open"):
        fake.complete_checkout(old.stripe_checkout_session_id)
    with db.read() as session:
        audit = session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "payment.link_superseded")
        ).all()
    assert [(a.resource_id, (a.diff or {}).get("superseded_by")) for a in audit] == [
        (old.id, new_row.id)
    ]
    assert [m.kind for m in _messages(db)] == ["payment.link", "payment.link"]
    fake.complete_checkout(new_row.stripe_checkout_session_id)
    deliver(vclient, fake, stripe_id(vclient, practice))
    drain(db, settings, kinds=("webhooks.process",))
    h = practice.clinic.headers
    assert (
        ok(vclient.get(f"{API}/patients/{practice.patient_id}/balance", headers=h))["balance"] == 0
    )


def test_an_older_link_paid_before_it_is_expired_stays_paid(
    fake: FakeStripe,
    call: Call,
    billed: str,
    db: Database,
    settings: Settings,
    vclient: TestClient,
    practice: Practice,
) -> None:
    call(("processPayment", {}), number=CALLER)
    drain(db, settings, kinds=(links.SEND_KIND,))
    [old] = _payments(db)
    _second_invoice(vclient, practice, 3000)
    call(("processPayment", {}), number=CALLER, call_id="call-2")
    fake.complete_checkout(old.stripe_checkout_session_id)  # paid as the new link is made
    drain(db, settings, kinds=("payments.cancel_at_stripe", "payments.reconcile"))
    (old_row,) = [p for p in _payments(db) if p.id == old.id]
    assert old_row.status == "succeeded" and old_row.amount_received == 12000
    h = practice.clinic.headers
    balance = ok(vclient.get(f"{API}/patients/{practice.patient_id}/balance", headers=h))
    assert balance["balance"] == 3000
