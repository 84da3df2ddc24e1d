"""The patient ledger: immutable entries, and the balance as their sum.

Sign convention (documented in the README): **positive = the patient owes**.

=========== ====== ==============================================================
kind        sign   posted when
=========== ====== ==============================================================
charge      \\+     an invoice is finalized (its total)
payment     \\-     Stripe reports a PaymentIntent succeeded (``amount_received``)
refund      \\+     Stripe reports the charge refunded (per Stripe refund)
adjustment  ±      a dispute opens (+) or is won (-), an open invoice is voided (-)
write_off   \\-     an invoice is marked uncollectible (what was still due)
=========== ====== ==============================================================

``post`` inserts with ``ON CONFLICT DO NOTHING`` on ``(tenant_id, source_key)``: the
same Stripe object or invoice event posted twice (a replayed webhook, a retried job,
two events about one intent) books once, whatever the order. The balance is never
stored: ``SUM(amount)`` over the covering index ``ix_ledger_entries_balance``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import NotFoundError
from clinicbridge.core.ids import new_id
from clinicbridge.core.models import Tenant
from clinicbridge.core.pagination import Page, paginate
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.patients.models import Patient
from clinicbridge.patients.service import audit_reads
from clinicbridge.payments.models import LEDGER_KINDS, LedgerEntry

_SIGNS = {"charge": 1, "payment": -1, "refund": 1, "write_off": -1}
_TABLE = cast(sa.Table, LedgerEntry.__table__)
_P = sa.bindparam
# Built once: an entry whose source key was booked already is skipped, not an error.
_INSERTS = {
    name: module.insert(_TABLE).on_conflict_do_nothing(index_elements=["tenant_id", "source_key"])
    for name, module in (("postgresql", postgresql), ("sqlite", sqlite))
}
_BALANCE = sa.select(sa.func.coalesce(sa.func.sum(LedgerEntry.amount), 0)).where(
    LedgerEntry.tenant_id == _P("tenant_id"),
    LedgerEntry.patient_id == _P("patient_id"),
    LedgerEntry.currency == _P("currency"),
)


@dataclass(frozen=True)
class Posting:
    """One entry to post; ``amount`` is signed (see the module docstring)."""

    tenant_id: str
    patient_id: str
    kind: str
    amount: int
    currency: str
    source_key: str
    description: str
    occurred_at: datetime
    invoice_id: str | None = None
    payment_id: str | None = None
    refund_id: str | None = None
    booking_id: str | None = None


def post(session: Session, posting: Posting, *, by: str, now: datetime) -> bool:
    """Book ``posting`` unless its source key was booked already; True if it was new."""
    if posting.kind not in LEDGER_KINDS:
        raise ValueError(f"unknown ledger kind {posting.kind!r}")
    sign = _SIGNS.get(posting.kind)
    if posting.amount == 0 or (sign is not None and posting.amount * sign < 0):
        raise ValueError(f"a {posting.kind} entry cannot be {posting.amount}")
    row = {
        "id": new_id("led"),
        "tenant_id": posting.tenant_id,
        "patient_id": posting.patient_id,
        "kind": posting.kind,
        "amount": posting.amount,
        "currency": posting.currency.lower(),
        "description": posting.description[:200],
        "source_key": posting.source_key,
        "invoice_id": posting.invoice_id,
        "payment_id": posting.payment_id,
        "refund_id": posting.refund_id,
        "booking_id": posting.booking_id,
        "occurred_at": posting.occurred_at,
        "created_by": by[:64],
        "created_at": now,
    }
    dialect = session.get_bind().dialect.name
    result = session.execute(_INSERTS["postgresql" if dialect == "postgresql" else "sqlite"], row)
    return bool(result.rowcount)  # type: ignore[attr-defined]


def clinic_currency(session: Session, tenant_id: str) -> str:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFoundError("No such clinic.")
    return tenant.currency.lower()


def balance_of(conn: sa.Connection, tenant_id: str, patient_id: str, currency: str) -> int:
    """The sum of the patient's entries in ``currency`` (minor units; positive = owes)."""
    found = conn.execute(
        _BALANCE, {"tenant_id": tenant_id, "patient_id": patient_id, "currency": currency.lower()}
    ).scalar_one()
    return int(found)


def _patient(session: Session, ctx: Ctx, patient_id: str) -> Patient:
    patient = session.scalars(
        scoped_select(Patient, ctx.tenant_id).where(Patient.id == patient_id)
    ).first()
    if patient is None:
        raise NotFoundError("No such patient.")
    return patient


def patient_balance(
    session: Session, ctx: Ctx, patient_id: str, *, purpose: str
) -> tuple[int, str]:
    """``(balance, currency)`` in the clinic's currency; the read is audited."""
    patient = _patient(session, ctx, patient_id)
    currency = clinic_currency(session, ctx.tenant_id)
    audit_reads(session, ctx, [patient.id], purpose=purpose)
    return balance_of(session.connection(), ctx.tenant_id, patient.id, currency), currency


def list_entries(
    session: Session,
    ctx: Ctx,
    patient_id: str,
    *,
    limit: int,
    starting_after: str | None,
    purpose: str,
) -> Page[LedgerEntry]:
    """The patient's entries, oldest first (by id); the read is audited."""
    patient = _patient(session, ctx, patient_id)
    audit_reads(session, ctx, [patient.id], purpose=purpose)
    stmt = scoped_select(LedgerEntry, ctx.tenant_id).where(LedgerEntry.patient_id == patient.id)
    return paginate(session, stmt, LedgerEntry.id, limit, starting_after)
