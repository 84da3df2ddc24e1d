"""The patient's admin page shows their memberships (plan, status, current period end,
next amount) for this clinic's patient only, escaped, to staff who may read billing,
within the one audited read of the page; another clinic's memberships never show."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from clinicbridge.audit.models import AuditEvent
from clinicbridge.core.ids import new_id
from clinicbridge.db.engine import Database
from clinicbridge.payments.membership_models import Membership
from clinicbridge.settings import Settings
from clinicbridge.testing.stripe import FakeStripe
from tests.conftest import Clinic
from tests.integration.test_admin_payments import _sign_in
from tests.integration.test_admin_web import _login, _user
from tests.integration.test_memberships import (
    DAY,
    Club,
    _paid_member,
    clock,
    club,
    fake,
    new_patient,
    ok,
    settle,
)
from tests.payments_support import deliver, drain, stripe_integration

__all__ = ["clock", "club", "fake"]


@pytest.fixture
def second(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as other:
        yield other


def _rows(html: str) -> dict[str, str]:
    """membership id → its table row."""
    return dict(re.findall(r'<tr data-membership-id="(mem_\w+)"(.*?)</tr>', html, re.S))


def _page(client: TestClient, clinic: Clinic, patient: str) -> str:
    page = client.get(f"/admin/tenants/{clinic.id}/patients/{patient}/balance")
    assert page.status_code == 200, page.text
    return page.text


def test_the_patient_page_shows_each_membership_with_its_state(
    client: TestClient,
    club: Club,
    fake: FakeStripe,
    db: Database,
    settings: Settings,
    clock: Callable[..., float],
) -> None:
    clinic = club.clinic
    trial = ok(club.join(client, club.plan(client, name="Wellness", trial_days=14)["id"]), 201)
    ending = _paid_member(
        client, club, fake, db, settings, club.plan(client, name="Dental", amount=4500)["id"]
    )
    clock.tick()  # type: ignore[attr-defined]
    ok(club.act(client, ending["id"], "cancel", at_period_end=True))
    late = _paid_member(
        client, club, fake, db, settings, club.plan(client, name="Physio", amount=6000)["id"]
    )
    gone = _paid_member(
        client,
        club,
        fake,
        db,
        settings,
        club.plan(client, name="<script>alert(1)</script> & co", amount=1000)["id"],
    )
    clock.tick()  # type: ignore[attr-defined]
    ok(club.act(client, gone["id"], "cancel", at_period_end=False))
    clock.tick(30 * DAY)  # type: ignore[attr-defined]
    fake.advance_period(late["stripe_subscription_id"], pay=False)
    deliver(client, fake, club.integration, frozenset({"invoice.payment_failed"}))
    drain(db, settings)
    settle(client, fake, db, settings, club)

    _sign_in(client, clinic, "billing@maple.example.com", "billing")
    html = _page(client, clinic, club.patient)
    assert 'id="memberships-heading">Memberships</h2>' in html
    rows = _rows(html)
    assert list(rows) == [gone["id"], late["id"], ending["id"], trial["id"]]  # newest first

    with db.read() as session:
        shown = {m.id: m for m in session.scalars(sa.select(Membership))}
    t = rows[trial["id"]]
    assert 'data-status="trialing"' in t and "Wellness" in t and "CA$30.00 a month" in t
    assert shown[trial["id"]].current_period_end is not None
    assert shown[trial["id"]].current_period_end.strftime("%Y-%m-%d") + " " in t  # type: ignore[union-attr]
    assert "(trial ends)" in t and 'data-next-amount="3000">CA$30.00' in t

    e = rows[ending["id"]]
    assert 'data-status="active"' in e and 'data-cancel-at-period-end="true"' in e
    assert "cancels at period end" in e and "data-next-amount" not in e and "none" in e
    end = shown[ending["id"]].current_period_end
    assert end is not None and end.strftime("%Y-%m-%d") in e

    p = rows[late["id"]]
    assert 'data-status="past_due"' in p and "past due" in p
    assert 'data-next-amount="6000">CA$60.00' in p

    g = rows[gone["id"]]
    assert 'data-status="canceled"' in g and "cancelled" in g and "ended " in g
    assert "data-next-amount" not in g and "cancels at period end" not in g
    # the plan's name is the clinic's own text: escaped, never markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in g and "<script>alert" not in html

    with db.read() as session:
        reads = [
            e
            for e in session.scalars(
                sa.select(AuditEvent).where(AuditEvent.action == "patient.read")
            )
            if (e.diff or {}).get("purpose") == "admin_balance"
        ]
    assert len(reads) == 1 and reads[0].resource_id == club.patient  # one read for the page


def test_a_patient_without_memberships(client: TestClient, club: Club) -> None:
    _sign_in(client, club.clinic, "billing@maple.example.com", "billing")
    html = _page(client, club.clinic, club.patient)
    assert _rows(html) == {} and "No memberships." in html


def test_another_clinics_memberships_never_show(
    client: TestClient,
    second: TestClient,
    club: Club,
    db: Database,
    make_clinic: Callable[..., Clinic],
) -> None:
    mine = ok(club.join(client, club.plan(client, name="Maple Wellness", trial_days=7)["id"]), 201)
    birch = make_clinic("Birch Dental")
    theirs = Club(birch, stripe_integration(client, birch), new_patient(client, birch, "Olga"))
    their_plan = theirs.plan(client, name="Birch Gold", trial_days=7)
    ok(theirs.join(client, their_plan["id"]), 201)
    # a row of Birch's naming Maple's patient (never made by the product, but a page of
    # Maple's must not show it even so)
    with db.write() as session:
        now = datetime.now(UTC)
        session.add(
            Membership(
                id=new_id("mem"),
                tenant_id=birch.id,
                patient_id=club.patient,
                plan_id=their_plan["id"],
                status="active",
                cancel_at_period_end=False,
                state_key=[0],
                idempotency_key="forged",
                created_by="test",
                created_at=now,
                updated_at=now,
            )
        )

    _sign_in(client, club.clinic, "billing@maple.example.com", "billing")
    html = _page(client, club.clinic, club.patient)
    assert list(_rows(html)) == [mine["id"]] and "Birch Gold" not in html
    # Birch's patient through Maple's page: not found
    url = f"/admin/tenants/{club.clinic.id}/patients/{theirs.patient}/balance"
    assert client.get(url).status_code == 404

    _sign_in(second, birch, "owner@birch.example.com", "owner")
    their_html = _page(second, birch, theirs.patient)
    assert "Birch Gold" in their_html and "Maple Wellness" not in their_html
    assert mine["id"] not in their_html
    # Maple's patient through Birch's page, or Maple's page with Birch's session: 404
    mine_there = second.get(f"/admin/tenants/{birch.id}/patients/{club.patient}/balance")
    assert mine_there.status_code == 404 and "Maple Wellness" not in mine_there.text
    assert (
        second.get(f"/admin/tenants/{club.clinic.id}/patients/{club.patient}/balance").status_code
        == 404
    )


def test_staff_without_billing_read_do_not_see_memberships(client: TestClient, club: Club) -> None:
    ok(club.join(client, club.plan(client, name="Wellness", trial_days=7)["id"]), 201)
    _user(client, club.clinic, "clin@maple.example.com", role="clinician")
    assert _login(client, "clin@maple.example.com").status_code == 303
    page = client.get(f"/admin/tenants/{club.clinic.id}/patients/{club.patient}/balance")
    assert page.status_code == 403 and "Wellness" not in page.text
