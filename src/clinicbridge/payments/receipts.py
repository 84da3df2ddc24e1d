"""Receipts: itemized, in the patient's language (English or French), as HTML (Jinja2,
autoescaped) and PDF (fpdf2), e-mailed through messaging after a payment succeeds.

Amounts and dates are formatted with Babel in the patient's language (the clinic's
default, then English) and the clinic's timezone, as ``messaging.variables`` does. A
payment for an invoice lists the invoice's lines and taxes; a deposit taken at booking
lists the appointment. Refunds Stripe confirmed are shown below the total.

The PDF uses the core Helvetica font (no font files, no system dependencies): its
encoding is Latin-1, which covers English and French (é, è, à, ç, ô, « »); other
characters are replaced, never dropped silently into a broken file.

The e-mail (template ``payment.receipt``) attaches the PDF (base64, see
``messaging.email``) and links the HTML receipt by a signed token
(``receipt_links``). One e-mail per payment, even if the job runs twice.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from babel.dates import format_datetime
from fpdf import FPDF
from jinja2 import Environment
from sqlalchemy.orm import Session

from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import NotFoundError
from clinicbridge.core.models import Tenant
from clinicbridge.jobs.registry import JobContext, registry
from clinicbridge.messaging.service import integration_for, queue_message, recipient
from clinicbridge.messaging.variables import babel_locale, format_amount, payment_variables
from clinicbridge.patients.models import Patient
from clinicbridge.payments import invoices, receipt_links
from clinicbridge.payments.lifecycle import RECEIPT_KIND
from clinicbridge.payments.models import Invoice, Payment, Refund
from clinicbridge.scheduling.models import Booking, Service

LABELS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Receipt",
        "receipt_no": "Receipt no.",
        "date": "Date",
        "patient": "Patient",
        "invoice": "Invoice",
        "item": "Item",
        "qty": "Qty",
        "amount": "Amount",
        "discount": "Discount",
        "subtotal": "Subtotal",
        "total": "Total",
        "paid": "Paid",
        "refunded": "Refunded",
        "method": "Payment method",
        "card": "Card",
        "link": "Payment link",
        "deposit": "Deposit for the appointment of",
        "full": "Appointment of",
        "balance": "Account balance",
        "thanks": "Thank you!",
    },
    "fr": {
        "title": "Reçu",
        "receipt_no": "Reçu no",
        "date": "Date",
        "patient": "Patient(e)",
        "invoice": "Facture",
        "item": "Article",
        "qty": "Qté",
        "amount": "Montant",
        "discount": "Rabais",
        "subtotal": "Sous-total",
        "total": "Total",
        "paid": "Payé",
        "refunded": "Remboursé",
        "method": "Mode de paiement",
        "card": "Carte",
        "link": "Lien de paiement",
        "deposit": "Acompte pour le rendez-vous du",
        "full": "Rendez-vous du",
        "balance": "Solde du compte",
        "thanks": "Merci!",
    },
}

_HTML = Environment(autoescape=True).from_string("""<!DOCTYPE html>
<html lang="{{ r.lang }}"><head><meta charset="utf-8">
<title>{{ l.title }} {{ r.number }}</title>
<style>body{font-family:Arial,Helvetica,sans-serif;color:#222;max-width:640px;margin:24px auto}
table{border-collapse:collapse;width:100%}td,th{padding:4px 8px;text-align:left}
.n{text-align:right}tfoot td{font-weight:bold}</style></head><body>
<h1>{{ r.clinic }}</h1><h2>{{ l.title }}</h2>
<p>{{ l.receipt_no }} {{ r.number }}<br>{{ l.date }}: {{ r.date }}<br>
{{ l.patient }}: {{ r.patient }}
{% if r.invoice %}<br>{{ l.invoice }}: {{ r.invoice }}{% endif %}</p>
<table><thead><tr><th>{{ l.item }}</th><th class="n">{{ l.qty }}</th>
<th class="n">{{ l.amount }}</th></tr></thead><tbody>
{% for line in r.lines %}<tr><td>{{ line.description }}</td>
<td class="n">{{ line.quantity }}</td><td class="n">{{ line.amount }}</td></tr>
{% if line.discount %}<tr><td>&nbsp;&nbsp;{{ l.discount }}</td><td></td>
<td class="n">-{{ line.discount }}</td></tr>{% endif %}{% endfor %}</tbody><tfoot>
{% if r.taxes %}<tr><td colspan="2">{{ l.subtotal }}</td>
<td class="n">{{ r.subtotal }}</td></tr>
{% for tax in r.taxes %}<tr><td colspan="2">{{ tax.name }} ({{ tax.percent }} %)</td>
<td class="n">{{ tax.amount }}</td></tr>{% endfor %}{% endif %}
<tr><td colspan="2">{{ l.total }}</td><td class="n">{{ r.total }}</td></tr>
<tr><td colspan="2">{{ l.paid }} ({{ l[r.method] }})</td><td class="n">{{ r.paid }}</td></tr>
{% for refund in r.refunds %}<tr><td colspan="2">{{ l.refunded }} {{ refund.date }}</td>
<td class="n">-{{ refund.amount }}</td></tr>{% endfor %}</tfoot></table>
<p>{{ l.thanks }}</p></body></html>
""")


@dataclass
class ReceiptData:
    lang: str
    clinic: str
    number: str
    date: str
    patient: str
    method: str
    invoice: str | None
    lines: list[dict[str, Any]]
    subtotal: str
    taxes: list[dict[str, str]]
    total: str
    paid: str
    refunds: list[dict[str, str]] = field(default_factory=list)


def _lang(tag: str | None, default: str | None) -> str:
    locale = babel_locale(tag, default)
    return "fr" if locale.language == "fr" else "en"


def receipt_data(session: Session, payment: Payment) -> ReceiptData:
    tenant = session.get(Tenant, payment.tenant_id)
    patient = session.get(Patient, payment.patient_id)
    assert tenant is not None and patient is not None
    locale = babel_locale(patient.preferred_language, tenant.default_language)
    lang = _lang(patient.preferred_language, tenant.default_language)
    zone, cur = ZoneInfo(tenant.timezone), payment.currency.upper()

    def money(amount: int) -> str:
        return format_amount(amount, cur, locale)

    def when(at: datetime) -> str:
        return str(format_datetime(at, "medium", tzinfo=zone, locale=locale)).replace("\u202f", " ")

    invoice = session.get(Invoice, payment.invoice_id) if payment.invoice_id else None
    lines: list[dict[str, Any]] = []
    taxes: dict[str, dict[str, Any]] = {}
    if invoice is not None and invoice.status != "draft":
        for line in invoices.lines_of(session, invoice):
            lines.append(
                {
                    "description": line.description,
                    "quantity": line.quantity,
                    "amount": money(line.quantity * line.unit_price),
                    "discount": money(line.discount) if line.discount else "",
                }
            )
            for tax in line.taxes:
                entry = taxes.setdefault(
                    f"{tax['name']}|{tax['percent']}",
                    {"name": tax["name"], "percent": tax["percent"], "amount": 0},
                )
                entry["amount"] += int(tax["amount"])
        subtotal, total = invoice.subtotal - invoice.discount_total, invoice.total
    else:
        booking = session.get(Booking, payment.booking_id) if payment.booking_id else None
        service = session.get(Service, booking.service_id) if booking is not None else None
        purpose = payment.purpose if payment.purpose in ("deposit", "balance") else "full"
        label = LABELS[lang][purpose]
        what = f"{service.name} - " if service is not None else ""
        description = f"{what}{label} {when(booking.starts_at)}" if booking else label
        lines.append(
            {
                "description": description,
                "quantity": 1,
                "amount": money(payment.amount),
                "discount": "",
            }
        )
        subtotal = total = payment.amount
    refunds = session.scalars(
        sa.select(Refund)
        .where(Refund.payment_id == payment.id, Refund.status == "succeeded")
        .order_by(Refund.created_at)
    ).all()
    return ReceiptData(
        lang=lang,
        clinic=tenant.name,
        number=payment.id,
        date=when(payment.succeeded_at or payment.created_at),
        patient=f"{patient.first_name} {patient.last_name}",
        method=payment.method,
        invoice=invoice.number if invoice is not None else None,
        lines=lines,
        subtotal=money(subtotal),
        taxes=[
            {"name": t["name"], "percent": t["percent"], "amount": money(t["amount"])}
            for t in taxes.values()
        ],
        total=money(total),
        paid=money(payment.amount_received or payment.amount),
        refunds=[{"date": when(r.updated_at), "amount": money(r.amount)} for r in refunds],
    )


def render_html(data: ReceiptData) -> str:
    return _HTML.render(r=data, l=LABELS[data.lang])


def _latin1(text: str) -> str:
    """What the core PDF font can show: Latin-1, with typographic spaces made plain."""
    plain = text.replace("\u202f", " ").replace("\u00a0", " ").replace("\u2009", " ")
    plain = plain.replace("\u2019", "'").replace("\u2013", "-").replace("\u2014", "-")
    return plain.encode("latin-1", "replace").decode("latin-1")


def render_pdf(data: ReceiptData) -> bytes:
    labels = LABELS[data.lang]
    pdf = FPDF(format="A4")
    pdf.set_title(_latin1(f"{labels['title']} {data.number}"))
    pdf.set_creator("ClinicBridge")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, _latin1(data.clinic), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "B", 13)
    pdf.cell(0, 8, _latin1(labels["title"]), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    for text in (
        f"{labels['receipt_no']} {data.number}",
        f"{labels['date']}: {data.date}",
        f"{labels['patient']}: {data.patient}",
        *([f"{labels['invoice']}: {data.invoice}"] if data.invoice else []),
    ):
        pdf.cell(0, 6, _latin1(text), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)

    def row(left: str, qty: str, right: str, *, bold: bool = False) -> None:
        pdf.set_font("Helvetica", "B" if bold else "", 10)
        pdf.cell(120, 7, _latin1(left))
        pdf.cell(20, 7, _latin1(qty), align="R")
        pdf.cell(0, 7, _latin1(right), align="R", new_x="LMARGIN", new_y="NEXT")

    row(labels["item"], labels["qty"], labels["amount"], bold=True)
    for line in data.lines:
        row(str(line["description"])[:70], str(line["quantity"]), str(line["amount"]))
        if line["discount"]:
            row(f"  {labels['discount']}", "", f"-{line['discount']}")
    if data.taxes:
        row(labels["subtotal"], "", data.subtotal)
        for tax in data.taxes:
            row(f"{tax['name']} ({tax['percent']} %)", "", tax["amount"])
    row(labels["total"], "", data.total, bold=True)
    row(f"{labels['paid']} ({labels[data.method]})", "", data.paid)
    for refund in data.refunds:
        row(f"{labels['refunded']} {refund['date']}", "", f"-{refund['amount']}")
    pdf.ln(6)
    pdf.cell(0, 6, _latin1(labels["thanks"]))
    return bytes(pdf.output())


def receipt_for(session: Session, ctx: Ctx, payment_id: str) -> ReceiptData:
    """The receipt of this clinic's succeeded payment (another clinic's: not found)."""
    payment = session.scalars(
        sa.select(Payment).where(Payment.tenant_id == ctx.tenant_id, Payment.id == payment_id)
    ).first()
    if payment is None or payment.status != "succeeded":
        raise NotFoundError("No receipt for this payment (unknown, or not paid).")
    return receipt_data(session, payment)


@registry.handler(RECEIPT_KIND, max_attempts=5)
def email_receipt(job: JobContext) -> None:
    """E-mail the receipt, if the clinic sends e-mail and the patient has an address."""
    with job.db.read() as session:  # most clinics: nothing to send, no write transaction
        payment = session.get(Payment, str(job.payload["payment_id"]))
        if payment is None or integration_for(session, payment.tenant_id, "email") is None:
            return
    with job.db.write() as session:
        payment = session.get(Payment, str(job.payload["payment_id"]))
        if payment is None or payment.status != "succeeded":
            return
        tenant = session.get(Tenant, payment.tenant_id)
        patient = session.get(Patient, payment.patient_id)
        assert tenant is not None and patient is not None
        if integration_for(session, tenant.id, "email") is None:
            return
        if recipient(session, tenant.id, patient.id, "email") is None:
            return
        data = receipt_data(session, payment)
        url = ""
        if job.settings is not None:
            url = receipt_links.receipt_url(job.settings, payment.id, job.now())
        variables = payment_variables(
            language=patient.preferred_language,
            clinic_default_language=tenant.default_language,
            clinic_name=tenant.name,
            clinic_phone="",
            patient_first_name=patient.first_name,
            amount_minor=payment.amount_received or payment.amount,
            currency=payment.currency,
            receipt_url=url,
        )
        attachment = {
            "filename": f"receipt-{payment.id}.pdf",
            "content": base64.b64encode(render_pdf(data)).decode("ascii"),
            "content_type": "application/pdf",
            "encoding": "base64",
        }
        queue_message(
            session,
            Ctx.system(tenant.id, "receipts", job.now()),
            patient_id=patient.id,
            channel="email",
            template="payment.receipt",
            variables=variables,
            booking_id=payment.booking_id,
            dedupe_key=f"payment:{payment.id}:receipt",
            attachments=[attachment],
        )
