"""Outbound events of payments (``webhooks.outbound.publish``, in the caller's
transaction): ``payment.succeeded``, ``payment.failed``, ``refund.created``,
``invoice.paid``. Their ``data`` holds ids, amounts and statuses, no patient details."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from clinicbridge.payments.models import Invoice, Payment, Refund
from clinicbridge.webhooks.outbound import publish

EVENT_TYPES = ("payment.succeeded", "payment.failed", "refund.created", "invoice.paid")


def payment_data(payment: Payment) -> dict[str, Any]:
    return {
        "id": payment.id,
        "status": payment.status,
        "amount": payment.amount,
        "amount_received": payment.amount_received,
        "currency": payment.currency,
        "patient_id": payment.patient_id,
        "booking_id": payment.booking_id,
        "invoice_id": payment.invoice_id,
        "purpose": payment.purpose,
        "method": payment.method,
        "stripe_payment_intent_id": payment.stripe_payment_intent_id,
        "failure_code": payment.failure_code,
    }


def refund_data(refund: Refund) -> dict[str, Any]:
    return {
        "id": refund.id,
        "payment_id": refund.payment_id,
        "status": refund.status,
        "amount": refund.amount,
        "currency": refund.currency,
        "stripe_refund_id": refund.stripe_refund_id,
    }


def invoice_data(invoice: Invoice) -> dict[str, Any]:
    return {
        "id": invoice.id,
        "number": invoice.number,
        "status": invoice.status,
        "total": invoice.total,
        "currency": invoice.currency,
        "patient_id": invoice.patient_id,
        "booking_id": invoice.booking_id,
    }


def emit(
    session: Session, tenant_id: str, event_type: str, data: dict[str, Any], now: datetime
) -> None:
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown payments event {event_type!r}")
    publish(session, tenant_id=tenant_id, event_type=event_type, data=data, now=now)
