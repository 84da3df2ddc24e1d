"""Tax rates, invoices and the ledger through the API: totals, numbering without gaps,
void and write-off entries, the balance, immutability, permissions and isolation."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.exc import DBAPIError

from clinicbridge.audit.models import AuditEvent
from clinicbridge.core.context import Ctx
from clinicbridge.db.engine import Database
from clinicbridge.payments.invoices import finalize_invoice
from clinicbridge.payments.models import LedgerEntry
from tests.conftest import Clinic, add_key

API = "/api/v1"


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def patient(client: TestClient, clinic: Clinic, first: str = "Hélène") -> str:
    body = {"first_name": first, "last_name": "Tremblay", "date_of_birth": "1980-03-05"}
    return str(
        ok(client.post(f"{API}/patients?force=true", json=body, headers=clinic.headers), 201)["id"]
    )


def quebec(client: TestClient, clinic: Clinic) -> None:
    for name, percent, priority in (("GST", "5", 0), ("QST", "9.975", 1)):
        body = {"tax_code": "QC", "name": name, "percent": percent, "priority": priority}
        ok(client.post(f"{API}/tax-rates", json=body, headers=clinic.headers), 201)


def draft(client: TestClient, clinic: Clinic, patient_id: str, lines: list[dict[str, Any]]) -> Any:
    body = {"patient_id": patient_id, "lines": lines}
    return ok(client.post(f"{API}/invoices", json=body, headers=clinic.headers), 201)


def balance(client: TestClient, clinic: Clinic, patient_id: str) -> Any:
    return ok(client.get(f"{API}/patients/{patient_id}/balance", headers=clinic.headers))


def this_year() -> int:
    return datetime.now(UTC).astimezone(ZoneInfo("America/Toronto")).year


def test_invoice_totals_taxes_finalize_and_balance(client: TestClient, clinic: Clinic) -> None:
    quebec(client, clinic)
    pid = patient(client, clinic)
    inv = draft(
        client,
        clinic,
        pid,
        [
            {
                "description": "Physiotherapy session",
                "quantity": 2,
                "unit_price": 5000,
                "discount": 1000,
                "tax_code": "QC",
            },
            {"description": "Medical note", "unit_price": 2500, "tax_code": "exempt"},
        ],
    )
    assert inv["status"] == "draft" and inv["number"] is None
    assert (inv["subtotal"], inv["discount_total"]) == (12_500, 1000)
    # line 1: 9,000 net; GST 450; QST 897.75 -> 898 (half up, per line)
    first = inv["lines"][0]
    assert [t["amount"] for t in first["taxes"]] == [450, 898] and first["total"] == 10_348
    assert inv["lines"][1]["taxes"] == [] and inv["tax_total"] == 1348
    assert inv["total"] == 12_500 - 1000 + 1348
    assert balance(client, clinic, pid) == {"balance": 0, "currency": "cad"}  # drafts book nothing

    final = ok(client.post(f"{API}/invoices/{inv['id']}/finalize", headers=clinic.headers))
    assert final["status"] == "open" and final["amount_due"] == final["total"]
    assert final["number"] == f"INV-{this_year()}-000001"
    assert balance(client, clinic, pid) == {"balance": final["total"], "currency": "cad"}
    [entry] = ok(client.get(f"{API}/patients/{pid}/ledger", headers=clinic.headers))["data"]
    assert (entry["kind"], entry["amount"], entry["invoice_id"]) == (
        "charge",
        final["total"],
        inv["id"],
    )
    again = client.post(f"{API}/invoices/{inv['id']}/finalize", headers=clinic.headers)
    assert again.status_code == 409 and again.json()["type"].endswith("/invoice-state")
    changed = client.post(
        f"{API}/invoices/{inv['id']}/lines",
        headers=clinic.headers,
        json={"description": "x", "unit_price": 1},
    )
    assert changed.status_code == 409


def test_void_reverses_and_uncollectible_writes_off(client: TestClient, clinic: Clinic) -> None:
    pid = patient(client, clinic)
    one = draft(client, clinic, pid, [{"description": "Visit", "unit_price": 8000}])
    two = draft(client, clinic, pid, [{"description": "Visit", "unit_price": 3000}])
    for inv in (one, two):
        ok(client.post(f"{API}/invoices/{inv['id']}/finalize", headers=clinic.headers))
    assert balance(client, clinic, pid)["balance"] == 11_000
    voided = ok(client.post(f"{API}/invoices/{one['id']}/void", headers=clinic.headers))
    assert voided["status"] == "void"
    lost = ok(client.post(f"{API}/invoices/{two['id']}/mark-uncollectible", headers=clinic.headers))
    assert lost["status"] == "uncollectible"
    assert balance(client, clinic, pid)["balance"] == 0
    kinds = [
        (e["kind"], e["amount"])
        for e in ok(client.get(f"{API}/patients/{pid}/ledger", headers=clinic.headers))["data"]
    ]
    assert sorted(kinds) == sorted(
        [("charge", 8000), ("charge", 3000), ("adjustment", -8000), ("write_off", -3000)]
    )
    again = client.post(f"{API}/invoices/{one['id']}/void", headers=clinic.headers)
    assert again.status_code == 409


def test_numbers_have_no_gaps_under_concurrent_finalizes(
    client: TestClient, clinic: Clinic, db: Database
) -> None:
    pid = patient(client, clinic)
    drafts = [
        draft(client, clinic, pid, [{"description": "Visit", "unit_price": 100 + i}])["id"]
        for i in range(8)
    ]
    # one that fails to finalize (no lines) must not use up a number
    empty = draft(client, clinic, pid, [])["id"]
    failed = client.post(f"{API}/invoices/{empty}/finalize", headers=clinic.headers)
    assert failed.status_code == 422 and failed.json()["errors"][0]["field"] == "lines"
    # one that took a number and then rolled back gives the number back
    with pytest.raises(RuntimeError, match="crash after numbering"), db.write() as session:
        ctx = Ctx.system(clinic.id, "test", datetime.now(UTC))
        taken = finalize_invoice(session, ctx, drafts[0])
        assert taken.number == f"INV-{this_year()}-000001"
        raise RuntimeError("crash after numbering")
    numbers: list[str] = []
    lock = threading.Lock()

    def finalize(invoice_id: str) -> None:
        answer = client.post(f"{API}/invoices/{invoice_id}/finalize", headers=clinic.headers)
        assert answer.status_code == 200, answer.text
        with lock:
            numbers.append(answer.json()["number"])

    threads = [threading.Thread(target=finalize, args=(i,)) for i in drafts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    year = this_year()
    assert sorted(numbers) == [f"INV-{year}-{n:06d}" for n in range(1, 9)]


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ({"description": "x", "unit_price": 100, "tax_code": "NOPE"}, "lines.0.tax_code"),
        ({"description": "x", "unit_price": 100, "discount": 101}, "lines.0.discount"),
        ({"unit_price": 100}, "lines.0.description"),
        ({"description": "x"}, "lines.0.unit_price"),
        ({"description": "x", "unit_price": -5}, "lines.0.unit_price"),
        ({"description": "x", "unit_price": 100, "quantity": 0}, "lines.0.quantity"),
        ({"service_id": "svc_missing"}, "lines.0.service_id"),
    ],
)
def test_bad_lines_name_the_field_and_write_nothing(
    client: TestClient, clinic: Clinic, db: Database, line: dict[str, Any], field: str
) -> None:
    pid = patient(client, clinic)
    refused = client.post(
        f"{API}/invoices", json={"patient_id": pid, "lines": [line]}, headers=clinic.headers
    )
    assert refused.status_code == 422, refused.text
    assert [e["field"] for e in refused.json()["errors"]] == [field]
    assert ok(client.get(f"{API}/invoices", headers=clinic.headers))["data"] == []


def test_bad_tax_rates_name_the_field(client: TestClient, clinic: Clinic) -> None:
    for body, field in (
        ({"tax_code": "QC", "name": "GST", "percent": 5}, "percent"),
        ({"tax_code": "QC", "name": "GST", "percent": "101"}, "percent"),
        ({"tax_code": "exempt", "name": "GST", "percent": "5"}, "tax_code"),
    ):
        refused = client.post(f"{API}/tax-rates", json=body, headers=clinic.headers)
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["field"] == field
    quebec(client, clinic)
    dup = client.post(
        f"{API}/tax-rates",
        headers=clinic.headers,
        json={"tax_code": "QC", "name": "GST", "percent": "5"},
    )
    assert dup.status_code == 409


def test_another_clinics_invoice_and_patient_are_404(
    client: TestClient, clinic: Clinic, make_clinic: Callable[..., Clinic]
) -> None:
    pid = patient(client, clinic)
    inv = draft(client, clinic, pid, [{"description": "Visit", "unit_price": 100}])
    other = make_clinic("Other Clinic")
    for method, url in (
        ("GET", f"{API}/invoices/{inv['id']}"),
        ("POST", f"{API}/invoices/{inv['id']}/finalize"),
        ("GET", f"{API}/patients/{pid}/balance"),
        ("GET", f"{API}/patients/{pid}/ledger"),
    ):
        assert client.request(method, url, headers=other.headers).status_code == 404
    assert ok(client.get(f"{API}/invoices", headers=other.headers))["data"] == []
    refused = client.post(f"{API}/invoices", json={"patient_id": pid}, headers=other.headers)
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "patient_id"


def test_permissions(client: TestClient, clinic: Clinic, db: Database) -> None:
    pid = patient(client, clinic)
    desk = add_key(db, clinic, "front_desk")  # billing:read only
    assert client.get(f"{API}/patients/{pid}/balance", headers=desk.headers).status_code == 200
    denied = client.post(f"{API}/invoices", json={"patient_id": pid}, headers=desk.headers)
    assert denied.status_code == 403 and denied.json()["permission"] == "billing:write"
    billing = add_key(db, clinic, "billing")
    threshold = client.patch(
        f"{API}/billing/settings", json={"refund_approval_threshold": 1}, headers=billing.headers
    )
    assert threshold.status_code == 403  # only owners move the approval threshold


def test_ledger_rows_cannot_be_changed_or_deleted(
    client: TestClient, clinic: Clinic, db: Database
) -> None:
    pid = patient(client, clinic)
    inv = draft(client, clinic, pid, [{"description": "Visit", "unit_price": 100}])
    ok(client.post(f"{API}/invoices/{inv['id']}/finalize", headers=clinic.headers))
    for statement in (sa.update(LedgerEntry).values(amount=1), sa.delete(LedgerEntry)):
        with pytest.raises(DBAPIError, match="ledger entries are immutable"), db.write() as s:
            s.execute(statement)
    assert balance(client, clinic, pid)["balance"] == 100


def test_balance_and_ledger_reads_are_audited(
    client: TestClient, clinic: Clinic, db: Database
) -> None:
    pid = patient(client, clinic)
    client.get(
        f"{API}/patients/{pid}/balance",
        headers={**clinic.headers, "X-Access-Purpose": "front desk"},
    )
    with db.read() as session:
        reads = session.scalars(
            sa.select(AuditEvent).where(
                AuditEvent.action == "patient.read", AuditEvent.resource_id == pid
            )
        ).all()
    assert [r.diff for r in reads][-1] == {"purpose": "front desk"} and reads[-1].phi
