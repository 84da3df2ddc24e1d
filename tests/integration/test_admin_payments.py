"""The admin billing pages over HTTP (no browser): payments with their status filter,
refunds asked for on a payment and approved or rejected by a second person, invoices
with their lines and taxes, a patient's balance and ledger (an audited read), RBAC,
CSRF and tenant isolation."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from clinicbridge.audit.models import AuditEvent
from clinicbridge.db.engine import Database
from clinicbridge.payments.models import Refund
from clinicbridge.settings import Settings
from clinicbridge.testing.stripe import FakeStripe
from clinicbridge.web.billing import parse_amount
from tests.conftest import Clinic
from tests.integration.test_admin_web import _csrf, _login, _user
from tests.integration.test_invoices import quebec
from tests.payments_support import API, Shop, deliver, drain, fake, ok, paid_booking, shop

__all__ = ["fake"]


def _sign_in(client: TestClient, clinic: Clinic, email: str, role: str) -> dict[str, str]:
    _user(client, clinic, email, role=role)
    assert _login(client, email).status_code == 303
    page = client.get(f"/admin/tenants/{clinic.id}/payments")
    assert page.status_code == 200, page.text
    return {"HX-Request": "true", "X-CSRF-Token": _csrf(page.text)}


@pytest.fixture
def s(client: TestClient, clinic: Clinic) -> Shop:
    return shop(client, clinic)


@pytest.fixture
def paid(client: TestClient, fake: FakeStripe, db: Database, settings: Settings, s: Shop) -> str:
    return str(paid_booking(client, fake, db, settings, s)["payment"]["id"])


@pytest.fixture
def second(app: FastAPI) -> Iterator[TestClient]:
    """Another browser: the second staff member's own session."""
    with TestClient(app, raise_server_exceptions=False) as other:
        yield other


def _refunds(db: Database) -> list[Refund]:
    with db.read() as session:
        return list(session.scalars(sa.select(Refund)))


def test_parse_amount() -> None:
    assert parse_amount("90", "cad") == 9000
    assert parse_amount(" 12,50 ", "cad") == 1250
    assert parse_amount("1500", "jpy") == 1500
    for bad in ("abc", "1.005", "0", "-3", "NaN", ""):
        with pytest.raises(Exception, match="amount"):
            parse_amount(bad, "cad")


def test_payments_page_lists_and_filters(client: TestClient, clinic: Clinic, paid: str) -> None:
    _sign_in(client, clinic, "billing@maple.example.com", "billing")
    page = client.get(f"/admin/tenants/{clinic.id}/payments")
    assert f'data-payment-id="{paid}"' in page.text and "CA$90.00" in page.text
    assert ">Payments</a>" in page.text and ">Refunds</a>" in page.text
    assert "Request refund" in page.text and 'data-status="succeeded"' in page.text
    assert "Hélène" not in page.text  # ids only: the list reads no patient record
    failed = client.get(f"/admin/tenants/{clinic.id}/payments?status=failed")
    assert paid not in failed.text and "No payments with this status" in failed.text


def test_front_desk_sees_payments_but_cannot_refund(
    client: TestClient, clinic: Clinic, paid: str, db: Database
) -> None:
    hx = _sign_in(client, clinic, "desk@maple.example.com", "front_desk")
    page = client.get(f"/admin/tenants/{clinic.id}/payments")
    assert paid in page.text and "Request refund" not in page.text
    refused = client.post(
        f"/admin/tenants/{clinic.id}/payments/{paid}/refund",
        headers=hx,
        data={"amount": "10", "reason": "goodwill"},
    )
    assert refused.status_code == 403 and _refunds(db) == []
    assert (
        client.post(f"/admin/tenants/{clinic.id}/refunds/ref_x/approve", headers=hx).status_code
        == 403
    )


def test_refund_form_errors_name_the_field_and_csrf_is_checked(
    client: TestClient, clinic: Clinic, paid: str, db: Database
) -> None:
    hx = _sign_in(client, clinic, "billing@maple.example.com", "billing")
    url = f"/admin/tenants/{clinic.id}/payments/{paid}/refund"
    bad = client.post(url, headers=hx, data={"amount": "abc", "reason": "x"})
    assert bad.status_code == 422 and "Amount must be an amount like 25.00" in bad.text
    assert 'value="abc"' in bad.text  # what was typed is kept
    too_much = client.post(url, headers=hx, data={"amount": "90.01", "reason": "x"})
    assert too_much.status_code == 422 and "more than can still be refunded" in too_much.text
    no_reason = client.post(url, headers=hx, data={"amount": "5", "reason": " "})
    assert no_reason.status_code == 422 and "Reason is required" in no_reason.text
    forged = client.post(url, headers={"HX-Request": "true"}, data={"amount": "5", "reason": "x"})
    assert forged.status_code == 403
    assert _refunds(db) == []


def test_two_person_refund_approval_and_the_ledger(
    client: TestClient,
    second: TestClient,
    clinic: Clinic,
    s: Shop,
    paid: str,
    fake: FakeStripe,
    db: Database,
    settings: Settings,
) -> None:
    ok(client.patch(f"{API}/billing/settings", json={"refund_approval_threshold": 5000},
                    headers=clinic.headers))  # fmt: skip
    hx_a = _sign_in(client, clinic, "ana@maple.example.com", "billing")
    asked = client.post(
        f"/admin/tenants/{clinic.id}/payments/{paid}/refund",
        headers=hx_a,
        data={"amount": "60.00", "reason": "Session cancelled by the clinic"},
    )
    assert asked.status_code == 200 and "waiting for approval" in asked.text
    [refund] = _refunds(db)
    assert (refund.status, refund.amount) == ("pending_approval", 6000)
    assert fake.calls("POST", "/v1/refunds") == []
    mine = client.get(f"/admin/tenants/{clinic.id}/refunds")
    assert "Waiting for a second person" in mine.text and ">Approve</button>" not in mine.text
    own = client.post(f"/admin/tenants/{clinic.id}/refunds/{refund.id}/approve", headers=hx_a)
    assert own.status_code == 403 and "cannot approve" in own.text
    assert _refunds(db)[0].status == "pending_approval"

    hx_b = _sign_in(second, clinic, "ben@maple.example.com", "billing")
    theirs = second.get(f"/admin/tenants/{clinic.id}/refunds?status=pending_approval")
    assert ">Approve</button>" in theirs.text and "ana@maple.example.com" in theirs.text
    approved = second.post(f"/admin/tenants/{clinic.id}/refunds/{refund.id}/approve", headers=hx_b)
    assert approved.status_code == 200 and "approved and sent to Stripe" in approved.text
    [sent] = fake.calls("POST", "/v1/refunds")
    assert sent.idempotency_key == f"cb:{refund.id}:refund:v1"
    [refund] = _refunds(db)
    assert refund.status == "succeeded" and refund.approved_by.startswith("user:")

    deliver(client, fake, s.integration)  # charge.refunded
    drain(db, settings)
    page = second.get(f"/admin/tenants/{clinic.id}/patients/{s.patient}/balance")
    assert page.status_code == 200 and "Hélène Tremblay" in page.text
    kinds = re.findall(r'data-kind="([a-z_]+)"', page.text)
    assert kinds == ["refund", "payment"]
    assert 'data-balance="-3000"' in page.text and "-CA$30.00" in page.text
    with db.read() as session:
        actions = [
            e.action
            for e in session.scalars(sa.select(AuditEvent).order_by(AuditEvent.id))
            if e.resource_type == "refund" or (e.diff or {}).get("purpose") == "admin_balance"
        ]
    assert actions[:2] == ["refund.request", "refund.approve"]
    assert actions[-1] == "patient.read"


def test_reject_with_a_reason(
    client: TestClient, second: TestClient, clinic: Clinic, paid: str, db: Database
) -> None:
    ok(client.patch(f"{API}/billing/settings", json={"refund_approval_threshold": 0},
                    headers=clinic.headers))  # fmt: skip
    hx_a = _sign_in(client, clinic, "ana@maple.example.com", "billing")
    client.post(
        f"/admin/tenants/{clinic.id}/payments/{paid}/refund",
        headers=hx_a,
        data={"amount": "10", "reason": "goodwill"},
    )
    [refund] = _refunds(db)
    hx_b = _sign_in(second, clinic, "ben@maple.example.com", "billing")
    rejected = second.post(
        f"/admin/tenants/{clinic.id}/refunds/{refund.id}/reject",
        headers=hx_b,
        data={"reason": "Outside the refund policy"},
    )
    assert rejected.status_code == 200 and "rejected" in rejected.text
    assert "Rejected: Outside the refund policy" in rejected.text
    again = second.post(f"/admin/tenants/{clinic.id}/refunds/{refund.id}/approve", headers=hx_b)
    assert again.status_code == 409
    assert _refunds(db)[0].status == "rejected"


def test_invoice_list_and_detail(client: TestClient, clinic: Clinic, s: Shop) -> None:
    quebec(client, clinic)
    body = {
        "patient_id": s.patient,
        "lines": [
            {"description": "Orthotics", "quantity": 2, "unit_price": 5000, "discount": 1000,
             "tax_code": "QC"},
        ],
    }  # fmt: skip
    draft = ok(client.post(f"{API}/invoices", json=body, headers=clinic.headers), 201)
    final = ok(client.post(f"{API}/invoices/{draft['id']}/finalize", headers=clinic.headers))
    _sign_in(client, clinic, "desk@maple.example.com", "front_desk")
    listing = client.get(f"/admin/tenants/{clinic.id}/invoices?status=open")
    assert final["number"] in listing.text and f'data-invoice-id="{final["id"]}"' in listing.text
    drafts = client.get(f"/admin/tenants/{clinic.id}/invoices?status=draft")
    assert final["number"] not in drafts.text
    page = client.get(f"/admin/tenants/{clinic.id}/invoices/{final['id']}")
    assert page.status_code == 200
    assert "Orthotics" in page.text and "-CA$10.00" in page.text
    assert "GST (5 %)" in page.text and "QST (9.975 %)" in page.text
    total = re.search(r"data-total>([^<]+)<", page.text)
    due = re.search(r"data-due>([^<]+)<", page.text)
    assert total and due and total.group(1) == due.group(1)
    assert final["total"] == 9000 + 450 + 898  # 5 % and 9.975 % of 90.00
    assert total.group(1) == "CA$103.48"


def test_other_clinics_and_permissions(
    client: TestClient,
    second: TestClient,
    clinic: Clinic,
    s: Shop,
    paid: str,
    make_clinic: Callable[..., Clinic],
    db: Database,
) -> None:
    birch = make_clinic("Birch Dental")
    hx = _sign_in(second, birch, "owner@birch.example.com", "owner")
    for path in ("payments", "refunds", "invoices", f"patients/{s.patient}/balance"):
        assert second.get(f"/admin/tenants/{clinic.id}/{path}").status_code == 404
    # Maple's patient through Birch's own pages: not found either, nothing audited.
    assert second.get(f"/admin/tenants/{birch.id}/patients/{s.patient}/balance").status_code == 404
    with db.read() as session:
        reads = session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "patient.read"))
        assert [e for e in reads if (e.diff or {}).get("purpose") == "admin_balance"] == []
    assert paid not in second.get(f"/admin/tenants/{birch.id}/payments").text
    refund = second.post(
        f"/admin/tenants/{birch.id}/payments/{paid}/refund",
        headers=hx,
        data={"amount": "1", "reason": "x"},
    )
    assert refund.status_code == 404
    _user(client, clinic, "clin@maple.example.com", role="clinician")
    assert _login(client, "clin@maple.example.com").status_code == 303
    assert client.get(f"/admin/tenants/{clinic.id}/payments").status_code == 403
    assert client.get(f"/admin/tenants/{clinic.id}/patients/{s.patient}/balance").status_code == 403
