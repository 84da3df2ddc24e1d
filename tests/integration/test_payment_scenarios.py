"""Event orderings converge: the same history (a paid booking, two refunds, one asked
twice with one Idempotency-Key, a refund made in Stripe's dashboard, then a dispute) is
delivered in order, reversed, shuffled with every event twice, or in order and then
replayed by staff; the ledger, the payment and the refunds end the same every time."""

from __future__ import annotations

import random

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.db.engine import Database
from clinicbridge.payments.models import LedgerEntry, Payment, Refund
from clinicbridge.settings import Settings
from clinicbridge.testing.stripe import FakeStripe
from tests.conftest import Clinic
from tests.payments_support import API, book, drain, fake, ok, post_event, shop, sign

__all__ = ["fake"]

ORDERINGS = ("in_order", "reversed", "shuffled_twice", "replayed")


def ledger(db: Database) -> list[tuple[str, int, str]]:
    with db.read() as session:
        rows = session.scalars(sa.select(LedgerEntry))
        return sorted((e.kind, e.amount, e.source_key.split(":")[0]) for e in rows)


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_every_ordering_ends_in_the_same_state(
    client: TestClient,
    clinic: Clinic,
    fake: FakeStripe,
    db: Database,
    settings: Settings,
    ordering: str,
) -> None:
    s = shop(client, clinic)
    made = ok(book(client, s, payment="full"), 201)
    payment_id = made["payment"]["id"]
    intent_id = made["payment"]["stripe_payment_intent_id"]
    fake.confirm(intent_id, "pm_card_visa")
    # the payment must be known as succeeded before a refund is asked: deliver that one
    for body, header in fake.deliveries(sign, types=frozenset({"payment_intent.succeeded"})):
        post_event(client, s.integration, body, header)
    drain(db, settings)
    held_back = [e for e in fake.events if e["type"] != "payment_intent.succeeded"]
    headers = {**clinic.headers, "Idempotency-Key": "refund-once-1"}
    body = {"payment_id": payment_id, "amount": 1000, "reason": "overcharged"}
    first = ok(client.post(f"{API}/refunds", json=body, headers=headers), 201)
    twice = client.post(f"{API}/refunds", json=body, headers=headers)  # a client retry
    assert twice.json()["id"] == first["id"] and twice.headers["Idempotent-Replayed"] == "true"
    ok(
        client.post(
            f"{API}/refunds",
            headers=clinic.headers,
            json={"payment_id": payment_id, "amount": 500, "reason": "goodwill"},
        ),
        201,
    )
    with fake._lock:  # a refund made by staff in Stripe's dashboard
        fake._create_refund({"payment_intent": intent_id, "amount": "700"})
    fake.dispute(fake.get(intent_id)["latest_charge"])  # then the cardholder disputes the rest
    history = held_back + [e for e in fake.events[len(held_back) + 1 :]]
    fake.deliveries(sign)  # marks them taken; we post them ourselves below
    pairs = [fake.signed(e, sign) for e in history]

    if ordering == "reversed":
        pairs = pairs[::-1]
    elif ordering == "shuffled_twice":
        pairs = pairs * 2
        random.Random(8).shuffle(pairs)
    for body_bytes, header in pairs:
        post_event(client, s.integration, body_bytes, header)
    drain(db, settings)
    if ordering == "replayed":
        for event in ok(client.get(f"{API}/webhook-events?limit=100", headers=clinic.headers))[
            "data"
        ]:
            ok(client.post(f"{API}/webhook-events/{event['id']}/replay", headers=clinic.headers))
        drain(db, settings)

    assert ledger(db) == sorted(
        [
            ("payment", -9000, "payment"),
            ("refund", 1000, "stripe"),
            ("refund", 500, "stripe"),
            ("refund", 700, "stripe"),
            ("adjustment", 9000 - 2200, "stripe"),
        ]
    )
    balance = ok(client.get(f"{API}/patients/{s.patient}/balance", headers=clinic.headers))
    assert balance["balance"] == 0  # paid 9000; 2200 refunded, 6800 taken back by the bank
    with db.read() as session:
        payment = session.get(Payment, payment_id)
        assert payment is not None
        assert (payment.status, payment.amount_refunded, payment.disputed) == (
            "succeeded",
            2200,
            True,
        )
        statuses = sorted(r.status for r in session.scalars(sa.select(Refund)))
    assert statuses == ["succeeded", "succeeded"]
