"""A provider's transfer that Stripe refused because their account could not receive
transfers yet is sent again, under a new key, once the account can (the signed
``account.updated`` webhook, or the provider's return from onboarding): paid exactly
once, however often the event comes; a refusal for any other reason stays failed."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.audit.models import AuditEvent
from clinicbridge.db.engine import Database
from clinicbridge.payments import transfer_retries, transfers
from clinicbridge.payments.connect_models import ConnectedAccount, Transfer
from clinicbridge.payments.errors import PaymentProviderUnavailableError
from clinicbridge.settings import Settings
from clinicbridge.testing.stripe import FakeStripe
from tests.conftest import Clinic
from tests.integration.test_connect import LATER, complete, onboarded
from tests.payments_support import (
    API,
    Shop,
    deliver,
    drain,
    fake,
    ok,
    paid_booking,
    post_event,
    shop,
    sign,
)

__all__ = ["fake"]


def refused_transfer(
    client: TestClient, fake: FakeStripe, db: Database, settings: Settings, s: Shop
) -> tuple[str, dict[str, str]]:
    """A provider who has not finished onboarding, a completed paid visit, and the
    transfer Stripe refused; returns the account and the booking."""
    made = ok(
        client.post(f"{API}/providers/{s.provider}/payout-account", headers=s.clinic.headers), 201
    )
    rule = {"provider_share_bps": 7000}
    ok(client.put(f"{API}/services/{s.service}/payout-rule", json=rule, headers=s.clinic.headers))
    booking = paid_booking(client, fake, db, settings, s, payment="full")
    complete(db, s, booking["id"])
    drain(db, settings, horizon=LATER)
    listed = ok(client.get(f"{API}/transfers", headers=s.clinic.headers))["data"]
    assert [(t["status"], t["failure_code"]) for t in listed] == [
        ("failed", "insufficient_capabilities_for_transfer")
    ]
    deliver(client, fake, s.integration)  # what Stripe told so far (nothing changes)
    drain(db, settings)
    return str(made["stripe_account_id"]), booking


def keys(fake: FakeStripe) -> list[tuple[str | None, bool]]:
    return [(c.idempotency_key, c.replayed) for c in fake.calls("POST", "/v1/transfers")]


def test_a_refused_transfer_is_paid_once_when_the_account_can_receive_it(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    s = shop(client, clinic)
    acct, booking = refused_transfer(client, fake, db, settings, s)
    payment_id = booking["payment"]["id"]  # type: ignore[index]
    fake.onboard(acct)
    assert deliver(client, fake, s.integration) == 1  # account.updated, signed by the SDK
    assert transfer_retries.RETRY_KIND in drain(db, settings)
    listed = ok(client.get(f"{API}/transfers", headers=clinic.headers))["data"]
    assert [(t["status"], t["amount"], t["failure_code"], t["attempt"]) for t in listed] == [
        ("paid", 6300, None, 2)
    ]
    url = f"{API}/providers/{s.provider}/payout-account"
    assert ok(client.get(url, headers=clinic.headers))["transfers_enabled"] is True
    assert keys(fake) == [(f"cb:{payment_id}:tr:v1", False), (f"cb:{payment_id}:tr:v2", False)]
    assert len(fake.of_type("transfer")) == 1 and fake.get(acct)["_balance"]["pending"] == 6300
    # the same state told again (a new event), and the job again: nothing more is sent
    fake.update_account(acct)
    deliver(client, fake, s.integration)
    drain(db, settings)
    with db.write() as session:
        transfers.enqueue_for(session, clinic.id, booking["id"], datetime.now().astimezone())
    drain(db, settings)
    assert len(fake.calls("POST", "/v1/transfers")) == 2 and len(fake.of_type("transfer")) == 1
    with db.read() as session:
        actions = session.scalars(
            sa.select(AuditEvent.action)
            .where(AuditEvent.resource_type == "transfer")
            .order_by(AuditEvent.id)
        ).all()
    assert actions == ["transfer.create", "transfer.failed", "transfer.retry", "transfer.paid"]


def test_a_lost_answer_of_the_retry_reuses_its_key(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    s = shop(client, clinic)
    acct, booking = refused_transfer(client, fake, db, settings, s)
    fake.onboard(acct)
    deliver(client, fake, s.integration)
    drain(db, settings, kinds=("webhooks.process",))
    with db.read() as session:
        row = session.scalars(sa.select(Transfer)).one()
        assert (row.status, row.attempt) == ("submitting", 2)
    fake.fail(500, after=True)  # Stripe made it; the answer is lost
    now = datetime.now().astimezone()
    with pytest.raises(PaymentProviderUnavailableError):
        transfers.submit(db, settings, row.id, now)
    drain(db, settings)  # the retry job
    v2 = f"cb:{booking['payment']['id']}:tr:v2"  # type: ignore[index]
    assert {k for k, _ in keys(fake)[1:]} == {v2}
    assert keys(fake)[-1] == (v2, True)  # Stripe's first answer, again
    assert len(fake.of_type("transfer")) == 1
    with db.read() as session:
        assert session.get(Transfer, row.id).status == "paid"  # type: ignore[union-attr]


def test_the_providers_return_from_onboarding_resends_the_transfer(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    s = shop(client, clinic)
    acct, _ = refused_transfer(client, fake, db, settings, s)
    fake.onboard(acct)  # the webhook has not come (yet)
    done = urlsplit(fake.calls("POST", "/v1/account_links")[-1].params["return_url"])
    page = client.get(f"{done.path}?{done.query}")
    assert page.status_code == 200 and "complete" in page.text
    drain(db, settings, kinds=(transfer_retries.RETRY_KIND,))
    listed = ok(client.get(f"{API}/transfers", headers=clinic.headers))["data"]
    assert [t["status"] for t in listed] == ["paid"]
    deliver(client, fake, s.integration)  # then the webhook: nothing more
    drain(db, settings)
    assert len(fake.of_type("transfer")) == 1


def test_a_transfer_refused_for_another_reason_is_not_retried(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    s = shop(client, clinic)
    acct = onboarded(client, fake, s)
    rule = {"provider_share_bps": 7000}
    ok(client.put(f"{API}/services/{s.service}/payout-rule", json=rule, headers=clinic.headers))
    booking = paid_booking(client, fake, db, settings, s, payment="full")
    # refunded at Stripe's dashboard, unknown here yet: the charge has nothing left
    charge = fake.get(booking["payment"]["stripe_payment_intent_id"])["latest_charge"]
    fake.objects[charge]["amount_refunded"] = fake.objects[charge]["amount_captured"]
    complete(db, s, booking["id"])
    drain(db, settings, horizon=LATER)
    listed = ok(client.get(f"{API}/transfers", headers=clinic.headers))["data"]
    assert [(t["status"], t["failure_code"]) for t in listed] == [
        ("failed", "balance_insufficient")
    ]
    # the account loses and regains its payouts: a recovery, but not this refusal's
    fake.update_account(acct, charges_enabled=False, payouts_enabled=False)
    deliver(client, fake, s.integration)
    drain(db, settings)
    fake.onboard(acct)
    deliver(client, fake, s.integration)
    assert transfer_retries.RETRY_KIND not in drain(db, settings)
    assert len(fake.calls("POST", "/v1/transfers")) == 1
    listed = ok(client.get(f"{API}/transfers", headers=clinic.headers))["data"]
    assert [(t["status"], t["failure_code"]) for t in listed] == [
        ("failed", "balance_insufficient")
    ]


def test_a_refusal_after_we_knew_the_account_was_able_waits_for_the_next_recovery(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    """Stripe refused though our last word was 'able' (its event is on the way): the
    account is marked not able, so that event is a recovery and resends the transfer."""
    s = shop(client, clinic)
    acct = onboarded(client, fake, s)
    rule = {"provider_share_bps": 7000}
    ok(client.put(f"{API}/services/{s.service}/payout-rule", json=rule, headers=clinic.headers))
    booking = paid_booking(client, fake, db, settings, s, payment="full")
    fake.update_account(acct, charges_enabled=False, payouts_enabled=False)  # not delivered
    complete(db, s, booking["id"])
    drain(db, settings, horizon=LATER)
    with db.read() as session:
        account = session.scalars(sa.select(ConnectedAccount)).one()
        assert account.transfers_active is False
    fake.onboard(acct)
    # only the last event arrives (the one saying 'unable' was lost): still a recovery
    post_event(client, s.integration, *fake.signed(fake.events[-1], sign))
    drain(db, settings)
    listed = ok(client.get(f"{API}/transfers", headers=clinic.headers))["data"]
    assert [t["status"] for t in listed] == ["paid"]
    assert len(fake.of_type("transfer")) == 1


def test_a_refusal_older_than_the_accounts_recovery_is_resent_at_once(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    """Stripe refused while the account was becoming able, and the event saying it is
    able was processed before the refusal was recorded: no later event would resend
    the transfer, so the refusal itself does."""
    s = shop(client, clinic)
    acct = onboarded(client, fake, s)
    rule = {"provider_share_bps": 7000}
    ok(client.put(f"{API}/services/{s.service}/payout-rule", json=rule, headers=clinic.headers))
    booking = paid_booking(client, fake, db, settings, s, payment="full")
    complete(db, s, booking["id"])
    asked = datetime.now().astimezone()  # the job starts, and asks Stripe...
    with db.write() as session:
        pending = transfers.prepare(session, booking["id"], asked)
    fake.update_account(acct, charges_enabled=False, payouts_enabled=False)
    with db.write() as session:  # ...while the recovery is recorded (updated after `asked`)
        account = session.scalars(sa.select(ConnectedAccount)).one()
        account.updated_at = datetime.now().astimezone()
    transfers.submit(db, settings, pending[0], asked)  # refused
    with db.read() as session:
        row = session.get(Transfer, pending[0])
        assert row is not None and (row.status, row.attempt) == ("submitting", 2)
    fake.onboard(acct)
    assert transfer_retries.RETRY_KIND in drain(db, settings, horizon=LATER)
    listed = ok(client.get(f"{API}/transfers", headers=clinic.headers))["data"]
    assert [t["status"] for t in listed] == ["paid"] and len(fake.of_type("transfer")) == 1
