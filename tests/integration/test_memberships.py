"""Memberships: plans as Stripe products and prices, patients joining with a trial or a
first invoice, plan changes with proration, cancel at period end and resume, the
subscription's webhooks converging whatever their order, paid invoices on the ledger
once, failed ones making the membership past due, and other clinics seeing nothing.

The fake Stripe runs on a clock the tests move, so each change has its own second, as
changes made by people do."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.db.engine import Database
from clinicbridge.payments import stripe_api
from clinicbridge.payments.membership_models import Membership
from clinicbridge.payments.models import LedgerEntry, UnmatchedStripeEvent
from clinicbridge.settings import Settings
from clinicbridge.testing.stripe import FakeStripe
from clinicbridge.webhooks.models import WebhookDelivery
from tests.conftest import Clinic
from tests.payments_support import (
    API,
    KEY,
    WHSEC,
    deliver,
    drain,
    ok,
    post_event,
    sign,
    stripe_integration,
)

DAY = 86400


@dataclass
class Clock:
    now: float

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock(float(int(time.time())))


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeStripe]:
    api = FakeStripe(api_key=KEY, webhook_secret=WHSEC, clock=clock)
    stripe_api.configure(transport=httpx.MockTransport(api))
    yield api
    stripe_api.configure()


@dataclass
class Club:
    clinic: Clinic
    integration: str
    patient: str

    def plan(self, client: TestClient, **body: Any) -> dict[str, Any]:
        payload = {"name": "Wellness", "amount": 3000, "interval": "month", **body}
        found = client.post(f"{API}/membership-plans", json=payload, headers=self.clinic.headers)
        return dict(ok(found, 201))

    def join(self, client: TestClient, plan_id: str, patient: str | None = None) -> Any:
        return client.post(
            f"{API}/patients/{patient or self.patient}/memberships",
            json={"plan_id": plan_id},
            headers=self.clinic.headers,
        )

    def act(self, client: TestClient, membership_id: str, verb: str, **body: Any) -> Any:
        return client.post(
            f"{API}/memberships/{membership_id}/{verb}", json=body, headers=self.clinic.headers
        )


def new_patient(client: TestClient, clinic: Clinic, first: str = "Hélène") -> str:
    body = {"first_name": first, "last_name": "Tremblay", "date_of_birth": "1980-03-05"}
    made = client.post(f"{API}/patients?force=true", json=body, headers=clinic.headers)
    return str(ok(made, 201)["id"])


@pytest.fixture
def club(client: TestClient, clinic: Clinic, fake: FakeStripe) -> Club:
    return Club(clinic, stripe_integration(client, clinic), new_patient(client, clinic))


def settle(client: TestClient, fake: FakeStripe, db: Database, settings: Settings, c: Club) -> None:
    deliver(client, fake, c.integration)
    drain(db, settings)


def membership(db: Database, membership_id: str) -> Membership:
    with db.read() as session:
        found = session.get(Membership, membership_id)
        assert found is not None
        return found


def ledger(db: Database) -> list[tuple[str, int, str]]:
    with db.read() as session:
        rows = session.scalars(sa.select(LedgerEntry).order_by(LedgerEntry.occurred_at))
        # by time, a charge before its payment
        found = [(e.occurred_at, e.kind != "charge", e.kind, e.amount, e.source_key) for e in rows]
        return [(k, a, key.rsplit(":", 1)[-1]) for _, _, k, a, key in sorted(found)]


def errors_of(response: Any) -> dict[str, str]:
    assert response.status_code == 422, response.text
    return {e["field"]: e["code"] for e in response.json()["errors"]}


# --- plans ---------------------------------------------------------------------------


def test_a_plan_is_a_stripe_product_and_recurring_price(
    client: TestClient, club: Club, fake: FakeStripe
) -> None:
    plan = club.plan(client, trial_days=14, interval="year", amount=30000)
    assert (plan["currency"], plan["interval"], plan["active"]) == ("cad", "year", True)
    price = fake.get(plan["stripe_price_id"])
    assert price["recurring"]["interval"] == "year" and price["unit_amount"] == 30000
    assert price["product"] == plan["stripe_product_id"]
    keys = [r.idempotency_key for r in fake.requests if r.method == "POST"]
    assert keys == [f"cb:{plan['id']}:product:v1", f"cb:{plan['id']}:price:v1"]
    listed = ok(client.get(f"{API}/membership-plans", headers=club.clinic.headers))["data"]
    assert [p["id"] for p in listed] == [plan["id"]]


def test_bad_plans_name_every_field_and_write_nothing(
    client: TestClient, club: Club, fake: FakeStripe
) -> None:
    h = club.clinic.headers
    bad = {"name": "X", "amount": 0, "interval": "week", "currency": "usd", "trial_days": -1}
    assert errors_of(client.post(f"{API}/membership-plans", json=bad, headers=h)) == {
        "amount": "not_positive",
        "interval": "invalid",
        "currency": "mismatch",
        "trial_days": "out_of_range",
    }
    assert ok(client.get(f"{API}/membership-plans", headers=h))["data"] == []
    assert fake.requests == []


def test_an_inactive_plan_takes_no_new_members(client: TestClient, club: Club) -> None:
    plan = club.plan(client)
    h = club.clinic.headers
    off = ok(
        client.patch(f"{API}/membership-plans/{plan['id']}", json={"active": False}, headers=h)
    )
    assert off["active"] is False
    assert errors_of(club.join(client, plan["id"])) == {"plan_id": "inactive"}
    active = ok(client.get(f"{API}/membership-plans?active=true", headers=h))["data"]
    assert active == []


# --- joining ---------------------------------------------------------------------------


def test_join_with_a_trial(
    client: TestClient,
    club: Club,
    fake: FakeStripe,
    db: Database,
    settings: Settings,
    clock: Clock,
) -> None:
    plan = club.plan(client, trial_days=14)
    joined = ok(club.join(client, plan["id"]), 201)
    assert joined["status"] == "trialing" and joined["client_secret"] is None
    sub = fake.get(joined["stripe_subscription_id"])
    assert sub["trial_end"] == int(clock.now) + 14 * DAY
    assert joined["trial_end"] == joined["current_period_end"]
    (call,) = fake.calls("POST", "/v1/subscriptions")
    assert call.params["trial_period_days"] == "14"
    assert call.params["payment_behavior"] == "default_incomplete"
    assert call.idempotency_key == f"cb:{joined['id']}:sub:v1"
    settle(client, fake, db, settings, club)
    assert membership(db, joined["id"]).status == "trialing"
    assert ledger(db) == []  # the trial's invoice is $0
    assert errors_of(club.join(client, plan["id"])) == {"plan_id": "already_member"}
    # a second plan reuses the patient's Stripe customer
    ok(club.join(client, club.plan(client, name="Dental")["id"]), 201)
    assert len(fake.calls("POST", "/v1/customers")) == 1
    listed = ok(
        client.get(f"{API}/patients/{club.patient}/memberships", headers=club.clinic.headers)
    )
    assert len(listed["data"]) == 2
    # the trial ends: the first real invoice is paid with the saved card
    clock.tick(14 * DAY)
    fake.advance_period(joined["stripe_subscription_id"])
    settle(client, fake, db, settings, club)
    assert membership(db, joined["id"]).status == "active"
    assert ledger(db) == [("charge", 3000, "charge"), ("payment", -3000, "payment")]


def _paid_member(
    client: TestClient, club: Club, fake: FakeStripe, db: Database, settings: Settings, plan: str
) -> dict[str, Any]:
    joined = ok(club.join(client, plan), 201)
    assert joined["status"] == "incomplete" and joined["client_secret"]
    fake.pay_invoice(joined["latest_invoice_id"])
    settle(client, fake, db, settings, club)
    return dict(joined)


def test_change_plan_prorates_and_the_paid_invoice_posts_once(
    client: TestClient,
    club: Club,
    fake: FakeStripe,
    db: Database,
    settings: Settings,
    clock: Clock,
) -> None:
    basic, plus = club.plan(client)["id"], club.plan(client, name="Plus", amount=6000)["id"]
    joined = _paid_member(client, club, fake, db, settings, basic)
    assert membership(db, joined["id"]).status == "active"
    assert ledger(db) == [("charge", 3000, "charge"), ("payment", -3000, "payment")]

    clock.tick(15 * DAY)  # half way through the month
    changed = ok(club.act(client, joined["id"], "change-plan", plan_id=plus))
    assert changed["plan_id"] == plus and changed["status"] == "active"
    (call,) = fake.calls("POST", f"/v1/subscriptions/{joined['stripe_subscription_id']}")
    assert call.params["proration_behavior"] == "create_prorations"
    assert (
        call.params["items"][0]["id"]
        == fake.get(joined["stripe_subscription_id"])["items"]["data"][0]["id"]
    )
    assert errors_of(club.act(client, joined["id"], "change-plan", plan_id=plus)) == {
        "plan_id": "same_plan"
    }
    clock.tick(15 * DAY)
    fake.advance_period(joined["stripe_subscription_id"])
    invoice = fake.get(fake.get(joined["stripe_subscription_id"])["latest_invoice"])
    lines = [(line["amount"], line["proration"]) for line in invoice["lines"]["data"]]
    assert lines == [(-1500, True), (3000, True), (6000, False)]
    settle(client, fake, db, settings, club)
    assert ledger(db)[2:] == [("charge", 7500, "charge"), ("payment", -7500, "payment")]

    # staff replay every stored event: nothing books twice, the state stays
    for event in ok(client.get(f"{API}/webhook-events?limit=100", headers=club.clinic.headers))[
        "data"
    ]:
        ok(client.post(f"{API}/webhook-events/{event['id']}/replay", headers=club.clinic.headers))
    drain(db, settings)
    assert len(ledger(db)) == 4
    balance = ok(client.get(f"{API}/patients/{club.patient}/balance", headers=club.clinic.headers))
    assert balance["balance"] == 0
    assert membership(db, joined["id"]).plan_id == plus
    with db.read() as session:  # the invoices' payment intents are not "unknown payments"
        assert list(session.scalars(sa.select(UnmatchedStripeEvent.type))) == []


def test_cancel_at_period_end_resume_then_deleted(
    client: TestClient,
    club: Club,
    fake: FakeStripe,
    db: Database,
    settings: Settings,
    clock: Clock,
) -> None:
    joined = ok(club.join(client, club.plan(client, trial_days=7)["id"]), 201)
    endpoint = {"url": "https://93.184.215.14/hooks", "event_types": ["membership.*"]}
    ok(client.post(f"{API}/webhook-endpoints", json=endpoint, headers=club.clinic.headers), 201)
    clock.tick()
    cancel = ok(club.act(client, joined["id"], "cancel", at_period_end=True))
    assert cancel["cancel_at_period_end"] is True and cancel["status"] == "trialing"
    clock.tick()
    resumed = ok(club.act(client, joined["id"], "resume"))
    assert resumed["cancel_at_period_end"] is False
    assert club.act(client, joined["id"], "resume").status_code == 409
    clock.tick()
    ok(club.act(client, joined["id"], "cancel", at_period_end=True))
    settle(client, fake, db, settings, club)
    assert membership(db, joined["id"]).cancel_at_period_end is True
    clock.tick(7 * DAY)
    fake.advance_period(joined["stripe_subscription_id"])
    settle(client, fake, db, settings, club)
    ended = membership(db, joined["id"])
    assert ended.status == "canceled" and ended.ended_at is not None
    assert club.act(client, joined["id"], "cancel", at_period_end=False).status_code == 409
    with db.read() as session:
        kinds = list(session.scalars(sa.select(WebhookDelivery.event_type)))
    assert kinds == ["membership.canceled"]


def test_cancel_now_is_a_delete(
    client: TestClient, club: Club, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    joined = _paid_member(client, club, fake, db, settings, club.plan(client)["id"])
    done = ok(club.act(client, joined["id"], "cancel", at_period_end=False))
    assert done["status"] == "canceled" and done["ended_at"] is not None
    assert fake.calls("DELETE", "/v1/subscriptions")
    settle(client, fake, db, settings, club)
    assert membership(db, joined["id"]).status == "canceled"


# --- convergence -----------------------------------------------------------------------


@pytest.mark.parametrize("ordering", ["in_order", "reversed", "shuffled_twice"])
def test_events_in_any_order_converge(
    client: TestClient,
    club: Club,
    fake: FakeStripe,
    db: Database,
    settings: Settings,
    clock: Clock,
    ordering: str,
) -> None:
    basic, plus = club.plan(client)["id"], club.plan(client, name="Plus", amount=6000)["id"]
    joined = ok(club.join(client, basic), 201)
    clock.tick()
    fake.pay_invoice(joined["latest_invoice_id"])
    clock.tick(DAY)
    ok(club.act(client, joined["id"], "change-plan", plan_id=plus))
    clock.tick(DAY)
    ok(club.act(client, joined["id"], "cancel", at_period_end=True))
    clock.tick(DAY)
    ok(club.act(client, joined["id"], "resume"))
    history = list(fake.events)
    fake.deliveries(sign)  # taken: posted below in the chosen order
    pairs = [fake.signed(e, sign) for e in history]
    if ordering == "reversed":
        pairs = pairs[::-1]
    elif ordering == "shuffled_twice":
        pairs = pairs * 2
        random.Random(6).shuffle(pairs)
    for body, header in pairs:
        post_event(client, club.integration, body, header)
    drain(db, settings)
    final = membership(db, joined["id"])
    assert (final.status, final.plan_id, final.cancel_at_period_end) == ("active", plus, False)
    assert not fake.calls("GET", "/v1/subscriptions")  # the objects' own fields sufficed
    assert ledger(db) == [("charge", 3000, "charge"), ("payment", -3000, "payment")]


def test_a_stale_event_does_not_overwrite_newer_state(
    client: TestClient,
    club: Club,
    fake: FakeStripe,
    db: Database,
    settings: Settings,
    clock: Clock,
) -> None:
    joined = ok(club.join(client, club.plan(client, trial_days=30)["id"]), 201)
    settle(client, fake, db, settings, club)
    clock.tick()
    fake._update_subscription(joined["stripe_subscription_id"], {"cancel_at_period_end": "true"})
    cancel = fake.events[-1]
    clock.tick()
    fake._update_subscription(joined["stripe_subscription_id"], {"cancel_at_period_end": "false"})
    resume = fake.events[-1]
    fake.deliveries(sign)
    post_event(client, club.integration, *fake.signed(resume, sign))
    post_event(client, club.integration, *fake.signed(cancel, sign))  # late and older
    drain(db, settings)
    assert membership(db, joined["id"]).cancel_at_period_end is False
    assert not fake.calls("GET", "/v1/subscriptions")  # told apart by the event's time


def test_same_second_tie_is_settled_by_stripe(
    client: TestClient, club: Club, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    joined = ok(club.join(client, club.plan(client, trial_days=30)["id"]), 201)
    settle(client, fake, db, settings, club)
    sub_id = joined["stripe_subscription_id"]
    fake._update_subscription(sub_id, {"cancel_at_period_end": "true"})
    cancel = fake.events[-1]
    fake._update_subscription(sub_id, {"cancel_at_period_end": "false"})
    resume = fake.events[-1]
    assert cancel["created"] == resume["created"]
    fake.deliveries(sign)
    post_event(client, club.integration, *fake.signed(resume, sign))
    post_event(client, club.integration, *fake.signed(cancel, sign))
    drain(db, settings)
    assert membership(db, joined["id"]).cancel_at_period_end is False
    assert fake.calls("GET", f"/v1/subscriptions/{sub_id}")


def test_a_failed_renewal_makes_the_membership_past_due(
    client: TestClient,
    club: Club,
    fake: FakeStripe,
    db: Database,
    settings: Settings,
    clock: Clock,
) -> None:
    joined = _paid_member(client, club, fake, db, settings, club.plan(client)["id"])
    endpoint = {"url": "https://93.184.215.14/hooks", "event_types": ["membership.past_due"]}
    ok(client.post(f"{API}/webhook-endpoints", json=endpoint, headers=club.clinic.headers), 201)
    clock.tick(30 * DAY)
    fake.advance_period(joined["stripe_subscription_id"], pay=False)
    deliver(client, fake, club.integration, frozenset({"invoice.payment_failed"}))
    drain(db, settings)
    assert membership(db, joined["id"]).status == "past_due"
    deliver(client, fake, club.integration)
    drain(db, settings)
    with db.read() as session:
        kinds = list(session.scalars(sa.select(WebhookDelivery.event_type)))
    assert kinds == ["membership.past_due"]  # once, though two events said so
    clock.tick(DAY)
    fake.pay_invoice(fake.get(joined["stripe_subscription_id"])["latest_invoice"])
    settle(client, fake, db, settings, club)
    assert membership(db, joined["id"]).status == "active"
    assert [k for k, _, _ in ledger(db)] == ["charge", "payment", "charge", "payment"]


# --- tenancy and permissions -------------------------------------------------------------


def test_another_clinic_sees_nothing(
    client: TestClient,
    club: Club,
    make_clinic: Callable[..., Clinic],
    fake: FakeStripe,
) -> None:
    plan = club.plan(client, trial_days=7)
    joined = ok(club.join(client, plan["id"]), 201)
    other = make_clinic("Other Clinic")
    h = other.headers
    stripe_integration(client, other)
    their_patient = new_patient(client, other, "Olga")
    assert client.get(f"{API}/membership-plans/{plan['id']}", headers=h).status_code == 404
    assert (
        client.patch(
            f"{API}/membership-plans/{plan['id']}", json={"active": False}, headers=h
        ).status_code
        == 404
    )
    assert client.get(f"{API}/memberships/{joined['id']}", headers=h).status_code == 404
    assert client.get(f"{API}/patients/{club.patient}/memberships", headers=h).status_code == 404
    for verb, body in (("change-plan", {"plan_id": plan["id"]}), ("cancel", {}), ("resume", {})):
        answer = client.post(f"{API}/memberships/{joined['id']}/{verb}", json=body, headers=h)
        assert answer.status_code == 404, (verb, answer.text)
    joined_there = client.post(
        f"{API}/patients/{their_patient}/memberships", json={"plan_id": plan["id"]}, headers=h
    )
    assert errors_of(joined_there) == {"plan_id": "not_found"}
    assert ok(client.get(f"{API}/membership-plans", headers=h))["data"] == []


def test_front_desk_reads_but_cannot_sell_memberships(
    client: TestClient, club: Club, make_clinic: Callable[..., Clinic], db: Database
) -> None:
    from tests.conftest import add_key

    desk = add_key(db, club.clinic, "front_desk")
    plan = club.plan(client)
    assert client.get(f"{API}/membership-plans", headers=desk.headers).status_code == 200
    body = {"name": "X", "amount": 100, "interval": "month"}
    assert (
        client.post(f"{API}/membership-plans", json=body, headers=desk.headers).status_code == 403
    )
    answer = client.post(
        f"{API}/patients/{club.patient}/memberships",
        json={"plan_id": plan["id"]},
        headers=desk.headers,
    )
    assert answer.status_code == 403


def test_stripe_down_while_joining_keeps_a_creating_membership_to_finish(
    client: TestClient, club: Club, fake: FakeStripe, db: Database
) -> None:
    plan = club.plan(client, trial_days=7)
    fake.down = True
    answer = club.join(client, plan["id"])
    assert answer.status_code == 503, answer.text
    assert answer.json()["type"].endswith("/payment-provider-unavailable")
    with db.read() as session:
        (waiting,) = session.scalars(sa.select(Membership)).all()
        assert waiting.status == "creating"
    fake.down = False
    joined = ok(club.join(client, plan["id"]), 201)
    assert joined["id"] == waiting.id and joined["status"] == "trialing"
    assert [c.idempotency_key for c in fake.calls("POST", "/v1/subscriptions")] == [
        f"cb:{waiting.id}:sub:v1"
    ]
