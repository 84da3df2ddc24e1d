"""Provider payouts (Stripe Connect): onboarding, account status and its alert, payout
rules, and the provider's transfer after a completed appointment, made exactly once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.core.context import Ctx
from clinicbridge.db.engine import Database
from clinicbridge.integrations.models import Alert
from clinicbridge.payments import transfers
from clinicbridge.payments.connect import provider_share
from clinicbridge.payments.connect_models import ServicePayoutRule, Transfer
from clinicbridge.payments.errors import PaymentProviderUnavailableError
from clinicbridge.scheduling.bookings import complete_booking
from clinicbridge.settings import Settings
from clinicbridge.testing.stripe import FakeStripe
from tests.conftest import Clinic
from tests.payments_support import API, Shop, deliver, drain, fake, ok, paid_booking, shop

__all__ = ["fake"]


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return dict(response.json())


def fields(response: Any) -> list[str]:
    return [e["field"] for e in problem(response, 422).get("errors", [])]


def onboarded(client: TestClient, fake: FakeStripe, s: Shop) -> str:
    """The provider's account, onboarding finished at Stripe and refreshed here."""
    made = ok(
        client.post(f"{API}/providers/{s.provider}/payout-account", headers=s.clinic.headers), 201
    )
    fake.onboard(made["stripe_account_id"])
    url = f"{API}/providers/{s.provider}/payout-account/refresh"
    assert ok(client.post(url, headers=s.clinic.headers))["status"] == "active"
    return str(made["stripe_account_id"])


LATER = timedelta(days=6)  # the completion's jobs are due at its (future) time


def complete(db: Database, s: Shop, booking_id: str) -> None:
    """Mark the visit completed, as the clinic does once it took place (days from now)."""
    with db.write() as session:
        ctx = Ctx.system(s.clinic.id, "test", datetime.now().astimezone() + timedelta(days=5))
        complete_booking(session, ctx, booking_id)


def test_onboarding_creates_one_express_account_and_a_fresh_link_each_time(
    client: TestClient, clinic: Clinic, fake: FakeStripe, settings: Settings
) -> None:
    s = shop(client, clinic)
    url = f"{API}/providers/{s.provider}/payout-account"
    first = ok(client.post(url, headers=clinic.headers), 201)
    assert first["status"] == "onboarding" and first["payouts_enabled"] is False
    assert first["onboarding_url"].startswith("https://connect.stripe.test/setup/")
    second = ok(client.post(url, headers=clinic.headers), 201)
    assert second["stripe_account_id"] == first["stripe_account_id"]
    assert second["onboarding_url"] != first["onboarding_url"]
    created = fake.calls("POST", "/v1/accounts")
    assert len(created) == 1 and created[0].params["type"] == "express"
    assert created[0].params["metadata"]["provider_id"] == s.provider
    links = fake.calls("POST", "/v1/account_links")
    assert [c.params["type"] for c in links] == ["account_onboarding"] * 2
    assert links[0].params["return_url"].startswith(settings.public_base_url)
    assert links[0].params["refresh_url"].startswith(settings.public_base_url)
    assert ok(client.get(url, headers=clinic.headers))["id"] == first["id"]


def test_unknown_or_other_clinics_provider_is_404(
    client: TestClient, make_clinic: Callable[..., Clinic], fake: FakeStripe
) -> None:
    ours, theirs = make_clinic("Maple"), make_clinic("Birch")
    s = shop(client, theirs)
    shop(client, ours)
    for provider in ("prv_01JD0000000000000000000000", s.provider):
        url = f"{API}/providers/{provider}/payout-account"
        problem(client.post(url, headers=ours.headers), 404)
        problem(client.get(url, headers=ours.headers), 404)
    # a provider without an account yet
    problem(client.get(f"{API}/providers/{s.provider}/payout-account", headers=theirs.headers), 404)
    assert fake.calls("POST", "/v1/accounts") == []


def test_blocked_payouts_open_an_alert_and_clearing_them_resolves_it(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    s = shop(client, clinic)
    acct = onboarded(client, fake, s)
    deliver(client, fake, s.integration)
    drain(db, settings)

    def alerts() -> list[tuple[str, str]]:
        with db.read() as session:
            rows = session.execute(
                sa.select(Alert.rule, Alert.status).where(Alert.rule == "connect_payouts_blocked")
            )
            return [(r, st) for r, st in rows]

    assert alerts() == []
    fake.update_account(
        acct, payouts_enabled=False, past_due=["external_account"],
        disabled_reason="requirements.past_due",
    )  # fmt: skip
    assert deliver(client, fake, s.integration) == 1
    drain(db, settings)
    status = ok(client.get(f"{API}/providers/{s.provider}/payout-account", headers=clinic.headers))
    assert status["status"] == "blocked" and status["requirements_past_due"] == ["external_account"]
    assert alerts() == [("connect_payouts_blocked", "open")]
    fake.update_account(acct, past_due=[], currently_due=["external_account"])  # still no payouts
    deliver(client, fake, s.integration)
    drain(db, settings)
    assert alerts() == [("connect_payouts_blocked", "open")]  # one incident, refreshed
    fake.onboard(acct)
    deliver(client, fake, s.integration)
    drain(db, settings)
    assert alerts() == [("connect_payouts_blocked", "resolved")]
    status = ok(client.get(f"{API}/providers/{s.provider}/payout-account", headers=clinic.headers))
    assert status["status"] == "active" and status["disabled_reason"] is None


def test_status_shows_the_connected_accounts_balance(
    client: TestClient, clinic: Clinic, fake: FakeStripe
) -> None:
    s = shop(client, clinic)
    acct = onboarded(client, fake, s)
    fake.set_balance(acct, available=1234, pending=500)
    got = ok(client.get(f"{API}/providers/{s.provider}/payout-account", headers=clinic.headers))
    assert got["balance"]["available"] == 1234 and got["balance"]["pending"] == 500
    assert got["balance"]["currency"] == "cad"
    fake.down = True  # the last snapshot is shown when Stripe is unreachable
    got = ok(client.get(f"{API}/providers/{s.provider}/payout-account", headers=clinic.headers))
    assert got["balance"]["available"] == 1234


@pytest.mark.parametrize(
    ("bps", "fee", "amount", "share"),
    [
        (7000, None, 9000, 6300),
        (3333, None, 1000, 333),  # the clinic keeps the fraction of a cent
        (10000, None, 9000, 9000),
        (0, None, 9000, 0),
        (None, 2500, 9000, 6500),
        (None, 9500, 9000, 0),  # a fee above the payment never makes a negative share
        (7000, None, 0, 0),
    ],
)
def test_provider_share(bps: int | None, fee: int | None, amount: int, share: int) -> None:
    rule = ServicePayoutRule(provider_share_bps=bps, application_fee_amount=fee)
    assert provider_share(amount, rule) == share


def test_payout_rule_validation_and_tenancy(
    client: TestClient, make_clinic: Callable[..., Clinic], fake: FakeStripe
) -> None:
    ours, theirs = make_clinic("Maple"), make_clinic("Birch")
    s = shop(client, ours)
    url = f"{API}/services/{s.service}/payout-rule"
    h = ours.headers
    both = {"provider_share_bps": 5000, "application_fee_amount": 100}
    assert fields(client.put(url, json=both, headers=h)) == ["provider_share_bps"]
    assert fields(client.put(url, json={}, headers=h)) == ["provider_share_bps"]
    assert fields(client.put(url, json={"provider_share_bps": 10001}, headers=h)) == [
        "provider_share_bps"
    ]
    assert fields(client.put(url, json={"application_fee_amount": -1}, headers=h)) == [
        "application_fee_amount"
    ]
    problem(client.get(url, headers=h), 404)  # no rule yet
    assert (
        ok(client.put(url, json={"provider_share_bps": 7000}, headers=h))["provider_share_bps"]
        == 7000
    )
    got = ok(client.put(url, json={"application_fee_amount": 1500}, headers=h))
    assert got["provider_share_bps"] is None and got["application_fee_amount"] == 1500
    problem(client.put(url, json={"provider_share_bps": 1}, headers=theirs.headers), 404)
    problem(client.get(url, headers=theirs.headers), 404)


def test_a_completed_appointment_pays_the_provider_once(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    s = shop(client, clinic)
    acct = onboarded(client, fake, s)
    rule = {"provider_share_bps": 7000}
    ok(client.put(f"{API}/services/{s.service}/payout-rule", json=rule, headers=clinic.headers))
    booking = paid_booking(client, fake, db, settings, s, payment="full")
    assert ok(client.get(f"{API}/transfers", headers=clinic.headers))["data"] == []
    complete(db, s, booking["id"])
    assert transfers.TRANSFER_KIND in drain(db, settings, horizon=LATER)
    # the job again, and the sweep: nothing more is sent
    with db.write() as session:
        transfers.enqueue_for(session, clinic.id, booking["id"], datetime.now().astimezone())
        from clinicbridge.jobs import queue

        queue.enqueue(session, transfers.SWEEP_KIND, now=datetime.now().astimezone())
    assert drain(db, settings) == [transfers.TRANSFER_KIND, transfers.SWEEP_KIND]
    assert drain(db, settings) == []  # the sweep found nothing to do
    sent = fake.calls("POST", "/v1/transfers")
    assert len(sent) == 1
    params = sent[0].params
    assert params["amount"] == "6300" and params["currency"] == "cad"
    assert params["destination"] == acct
    charge = fake.get(booking["payment"]["stripe_payment_intent_id"])["latest_charge"]
    assert params["source_transaction"] == charge
    listed = ok(client.get(f"{API}/transfers", headers=clinic.headers))["data"]
    assert [(t["amount"], t["status"], t["booking_id"]) for t in listed] == [
        (6300, "paid", booking["id"])
    ]
    assert listed[0]["stripe_transfer_id"].startswith("tr_")
    assert fake.get(acct)["_balance"]["pending"] == 6300


def test_a_lost_transfer_answer_is_retried_with_the_same_key(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    s = shop(client, clinic)
    onboarded(client, fake, s)
    rule = {"application_fee_amount": 2500}
    ok(client.put(f"{API}/services/{s.service}/payout-rule", json=rule, headers=clinic.headers))
    booking = paid_booking(client, fake, db, settings, s, payment="full")
    complete(db, s, booking["id"])
    with db.write() as session:
        pending = transfers.prepare(session, booking["id"], datetime.now().astimezone())
    assert len(pending) == 1
    fake.fail(500, after=True)  # Stripe made it; the answer is lost
    failed = 0
    for _ in range(6):  # as the job's retries would
        try:
            transfers.submit(db, settings, pending[0], datetime.now().astimezone())
            break
        except PaymentProviderUnavailableError:
            failed += 1
    assert failed >= 1
    assert len(fake.of_type("transfer")) == 1
    keys = {c.idempotency_key for c in fake.calls("POST", "/v1/transfers")}
    assert keys == {f"cb:{booking['payment']['id']}:tr:v1"}
    assert [c.replayed for c in fake.calls("POST", "/v1/transfers")] == [False, True]
    with db.read() as session:
        row = session.get(Transfer, pending[0])
        assert row is not None and row.status == "paid" and row.amount == 6500


def test_a_provider_not_yet_onboarded_gets_a_failed_transfer_named_by_stripe(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    s = shop(client, clinic)
    ok(client.post(f"{API}/providers/{s.provider}/payout-account", headers=clinic.headers), 201)
    rule = {"provider_share_bps": 5000}
    ok(client.put(f"{API}/services/{s.service}/payout-rule", json=rule, headers=clinic.headers))
    booking = paid_booking(client, fake, db, settings, s, payment="full")
    complete(db, s, booking["id"])
    drain(db, settings, horizon=LATER)
    listed = ok(client.get(f"{API}/transfers", headers=clinic.headers))["data"]
    assert [(t["status"], t["failure_code"]) for t in listed] == [
        ("failed", "insufficient_capabilities_for_transfer")
    ]


def test_an_older_account_event_changes_nothing(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    s = shop(client, clinic)
    acct = onboarded(client, fake, s)
    fake.update_account(acct, payouts_enabled=False, past_due=["external_account"])
    stale = fake.events[-1]
    fake.onboard(acct)
    deliver(client, fake, s.integration)
    drain(db, settings)
    url = f"{API}/providers/{s.provider}/payout-account"
    assert ok(client.get(url, headers=clinic.headers))["status"] == "active"
    old = {**stale, "id": "evt_replayed_old", "created": stale["created"] - 60}
    from tests.payments_support import post_event, sign

    post_event(client, s.integration, *fake.signed(old, sign))
    drain(db, settings)
    assert ok(client.get(url, headers=clinic.headers))["status"] == "active"


def test_a_refund_takes_the_providers_part_back(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    s = shop(client, clinic)
    acct = onboarded(client, fake, s)
    rule = {"provider_share_bps": 7000}
    ok(client.put(f"{API}/services/{s.service}/payout-rule", json=rule, headers=clinic.headers))
    booking = paid_booking(client, fake, db, settings, s, payment="full")  # 9000
    complete(db, s, booking["id"])
    drain(db, settings, horizon=LATER)
    refund = {"payment_id": booking["payment"]["id"], "amount": 3000, "reason": "partly unhappy"}
    ok(client.post(f"{API}/refunds", json=refund, headers=clinic.headers), 201)
    deliver(client, fake, s.integration)
    drain(db, settings)
    deliver(client, fake, s.integration)  # the events again: nothing more taken back
    drain(db, settings)
    reversals = fake.calls("POST", "/v1/transfers/")
    assert [c.params["amount"] for c in reversals if c.path.endswith("/reversals")] == ["2100"]
    listed = ok(client.get(f"{API}/transfers", headers=clinic.headers))["data"]
    assert [(t["amount"], t["amount_reversed"], t["status"]) for t in listed] == [
        (6300, 2100, "paid")
    ]
    assert fake.get(acct)["_balance"]["pending"] == 4200
    rest = {"payment_id": booking["payment"]["id"], "amount": 6000, "reason": "all of it"}
    ok(client.post(f"{API}/refunds", json=rest, headers=clinic.headers), 201)
    deliver(client, fake, s.integration)
    drain(db, settings)
    listed = ok(client.get(f"{API}/transfers", headers=clinic.headers))["data"]
    assert [(t["amount_reversed"], t["status"]) for t in listed] == [(6300, "reversed")]
    assert fake.get(acct)["_balance"]["pending"] == 0
