"""Receipts: itemized with taxes, in the patient's language (French and English), as HTML
and as a PDF whose text (accents included) reads back with pypdf; e-mailed with the PDF
attached through a real SMTP server; the signed link opens it, a tampered one is 404."""

from __future__ import annotations

import io
from collections.abc import Iterator
from email import message_from_bytes, policy

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from pypdf import PdfReader

from clinicbridge.db.engine import Database
from clinicbridge.jobs.models import Job
from clinicbridge.payments.lifecycle import RECEIPT_KIND
from clinicbridge.settings import Settings
from clinicbridge.testing.stripe import FakeStripe
from tests.conftest import Clinic, free_port
from tests.integration.test_smtp import Server, Sink
from tests.payments_support import (
    API,
    Shop,
    book,
    deliver,
    drain,
    fake,
    ok,
    paid_booking,
    shop,
)

__all__ = ["fake"]


@pytest.fixture
def smtp() -> Iterator[Server]:
    sink, port = Sink(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, server_hostname="mail.test")
    controller.start()
    yield Server(port, sink)
    controller.stop()


def pdf_text(data: bytes) -> str:
    reader = PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() for page in reader.pages)


def pdf_mails(smtp: Server) -> list[object]:
    return [e for e in smtp.sink.envelopes if b"application/pdf" in (e.original_content or b"")]


def quebec_invoice(client: TestClient, s: Shop, booking_id: str) -> dict[str, object]:
    h = s.clinic.headers
    for name, percent, priority in (("TPS", "5", 0), ("TVQ", "9.975", 1)):
        ok(
            client.post(
                f"{API}/tax-rates",
                headers=h,
                json={"tax_code": "QC", "name": name, "percent": percent, "priority": priority},
            ),
            201,
        )
    inv = ok(
        client.post(
            f"{API}/invoices",
            headers=h,
            json={
                "patient_id": s.patient,
                "booking_id": booking_id,
                "lines": [
                    {
                        "description": "Séance de physiothérapie",
                        "unit_price": 8000,
                        "tax_code": "QC",
                    }
                ],
            },
        ),
        201,
    )
    return dict(ok(client.post(f"{API}/invoices/{inv['id']}/finalize", headers=h)))


def test_french_receipt_as_html_and_pdf(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    s = shop(client, clinic)  # the patient prefers fr-CA
    made = paid_booking(client, fake, db, settings, s, payment="deposit")
    payment_id = made["payment"]["id"]
    html = client.get(f"{API}/payments/{payment_id}/receipt", headers=clinic.headers)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "Reçu" in html.text and "Acompte pour le rendez-vous du" in html.text
    assert "25,00 $" in html.text and "Hélène Tremblay" in html.text
    pdf = client.get(f"{API}/payments/{payment_id}/receipt?format=pdf", headers=clinic.headers)
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    text = pdf_text(pdf.content)
    assert "Reçu" in text and "Hélène Tremblay" in text and "25,00 $" in text


def test_invoice_receipt_lists_lines_and_taxes_in_english(
    client: TestClient, clinic: Clinic, fake: FakeStripe, db: Database, settings: Settings
) -> None:
    s = shop(client, clinic)
    ok(
        client.patch(
            f"{API}/patients/{s.patient}", json={"preferred_language": "en"}, headers=clinic.headers
        )
    )
    made = paid_booking(client, fake, db, settings, s, payment="deposit")
    invoice = quebec_invoice(client, s, made["id"])
    assert invoice["total"] == 8000 + 400 + 798 and invoice["amount_paid"] == 2500
    pay = ok(
        client.post(f"{API}/invoices/{invoice['id']}/pay", json={}, headers=clinic.headers), 201
    )
    assert pay["amount"] == invoice["total"] - 2500
    fake.confirm(pay["stripe_payment_intent_id"], "pm_card_visa")
    deliver(client, fake, s.integration)
    drain(db, settings)
    got = ok(client.get(f"{API}/invoices/{invoice['id']}", headers=clinic.headers))
    assert got["status"] == "paid" and got["amount_due"] == 0
    html = client.get(f"{API}/payments/{pay['id']}/receipt", headers=clinic.headers).text
    assert "Receipt" in html and "Séance de physiothérapie" in html
    assert "TPS (5 %)" in html and "TVQ (9.975 %)" in html and "$91.98" in html
    text = pdf_text(
        client.get(f"{API}/payments/{pay['id']}/receipt?format=pdf", headers=clinic.headers).content
    )
    assert "Séance de physiothérapie" in text and "$7.98" in text


def test_receipt_is_emailed_with_the_pdf_and_a_signed_link(
    client: TestClient,
    clinic: Clinic,
    fake: FakeStripe,
    db: Database,
    settings: Settings,
    smtp: Server,
) -> None:
    ok(
        client.post(
            f"{API}/integrations",
            headers=clinic.headers,
            json={"connector": "smtp", "name": "Mail", "settings": smtp.settings()},
        ),
        201,
    )
    s = shop(client, clinic)
    paid_booking(client, fake, db, settings, s, payment="deposit")
    drain(db, settings)  # the receipt job queues the message, the send job sends it
    receipts = pdf_mails(smtp)
    assert len(receipts) == 1
    mail = message_from_bytes(receipts[0].original_content or b"", policy=policy.default)  # type: ignore[attr-defined]
    [attachment] = [p for p in mail.iter_attachments() if p.get_content_type() == "application/pdf"]
    assert "Reçu" in pdf_text(attachment.get_content())
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None
    link = next(word for word in body.get_content().split() if "/receipts/" in word)
    path = link[link.index("/receipts/") :]
    page = client.get(path)  # no API key: the token is the credential
    assert page.status_code == 200 and "Reçu" in page.text
    assert page.headers["cache-control"] == "private, no-store"
    assert client.get(path[:-2] + ("AA" if not path.endswith("AA") else "BB")).status_code == 404
    # one receipt even if the job runs again
    with db.write() as session:
        session.execute(sa.update(Job).where(Job.kind == RECEIPT_KIND).values(state="pending"))
    drain(db, settings)
    assert (
        len([e for e in smtp.sink.envelopes if b"application/pdf" in (e.original_content or b"")])
        == 1
    )


def test_no_receipt_for_unpaid_or_other_clinics_payments(
    client: TestClient,
    clinic: Clinic,
    fake: FakeStripe,
    db: Database,
    settings: Settings,
    make_clinic: type,
) -> None:
    s = shop(client, clinic)
    unpaid = ok(book(client, s), 201)["payment"]["id"]
    assert client.get(f"{API}/payments/{unpaid}/receipt", headers=clinic.headers).status_code == 404
    made = paid_booking(client, fake, db, settings, s, slot=1)
    other = make_clinic("Other Clinic")  # type: ignore[operator]
    assert (
        client.get(
            f"{API}/payments/{made['payment']['id']}/receipt", headers=other.headers
        ).status_code
        == 404
    )
