"""Property: for any sequence of invoices (finalized, voided, written off), payments,
refunds and disputes, each possibly applied twice (Stripe retries, replays), the
balance is the sum of the finalized invoice totals - payments + refunds + disputes -
voids - write-offs, and the same Stripe object never books twice."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from clinicbridge.core.context import Ctx
from clinicbridge.core.ids import new_id
from clinicbridge.core.rbac import BUILTIN_ROLES
from clinicbridge.core.tenancy import create_tenant
from clinicbridge.db.engine import Database
from clinicbridge.integrations.models import Integration
from clinicbridge.patients.models import Patient
from clinicbridge.payments import invoices, ledger, lifecycle, refunds
from clinicbridge.payments.models import Payment
from clinicbridge.payments.stripe_api import StripeRefund

Op = tuple[str, int, bool]  # (operation, amount or index, delivered twice)
OPS = st.one_of(
    st.tuples(st.just("pay"), st.integers(1, 50_000), st.booleans()),
    st.tuples(st.just("refund"), st.integers(1, 60_000), st.booleans()),
    st.tuples(st.just("invoice"), st.integers(1, 50_000), st.booleans()),
    st.tuples(st.just("void"), st.integers(0, 9), st.booleans()),
    st.tuples(st.just("write_off"), st.integers(0, 9), st.booleans()),
    st.tuples(st.just("pay"), st.integers(1, 50_000), st.booleans()),
    st.tuples(st.just("refund"), st.integers(1, 60_000), st.booleans()),
    st.tuples(st.just("dispute"), st.integers(0, 9), st.booleans()),
)


@dataclass
class Model:
    expected: int = 0
    open_invoices: list[tuple[str, int]] = field(default_factory=list)
    payments: list[list[Any]] = field(default_factory=list)  # [id, received, refunded]
    disputed: set[str] = field(default_factory=set)


@pytest.fixture
def clinic_ids(db: Database) -> tuple[str, str]:
    now = datetime.now(UTC)
    with db.write() as session:
        tenant = create_tenant(session, name="Property Clinic", now=now, currency="CAD")
        integration = Integration(
            id=new_id("int"),
            tenant_id=tenant.id,
            connector="stripe",
            name="Stripe",
            enabled=True,
            status="active",
            credentials={},
            credential_hints={},
            settings={},
            created_by="test",
            updated_by="test",
            created_at=now,
            updated_at=now,
        )
        session.add(integration)
        return tenant.id, integration.id


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(OPS, min_size=1, max_size=14))
def test_balance_is_the_sum_of_what_happened(
    db: Database, clinic_ids: tuple[str, str], ops: list[Op]
) -> None:
    tenant_id, integration_id = clinic_ids
    now = datetime.now(UTC)
    ctx = Ctx.system(tenant_id, "property", now, permissions=BUILTIN_ROLES["owner"])
    model = Model()
    with db.write() as session:
        patient = Patient(
            id=new_id("pat"),
            tenant_id=tenant_id,
            first_name="Sam",
            last_name="Sample",
            first_norm="sam",
            last_norm="sample",
            name_key="SM SMPL",
            created_by="test",
            created_at=now,
            updated_at=now,
        )
        session.add(patient)
        session.flush()
        for op, value, twice in ops:
            delivery = _plan(session, ctx, model, patient.id, integration_id, op, value)
            for _ in range(2 if twice else 1):
                if delivery is not None:
                    delivery()  # the second time: Stripe retrying, or staff replaying
        got = ledger.balance_of(session.connection(), tenant_id, patient.id, "cad")
    assert got == model.expected


def _plan(
    session: Session,
    ctx: Ctx,
    model: Model,
    patient_id: str,
    integration_id: str,
    op: str,
    value: int,
) -> Callable[[], None] | None:
    """Do the clinic's side of ``op`` once, update the model, and return what Stripe
    delivers (applied once or twice by the caller), or None."""
    if op == "invoice":
        inv = invoices.create_invoice(
            session,
            ctx,
            patient_id=patient_id,
            lines=[{"description": "Visit", "unit_price": value, "tax_code": "exempt"}],
        )
        invoices.finalize_invoice(session, ctx, inv.id)
        model.open_invoices.append((inv.id, value))
        model.expected += value
        return None
    if op in ("void", "write_off"):
        if not model.open_invoices:
            return None
        inv_id, total = model.open_invoices.pop(value % len(model.open_invoices))
        if op == "void":
            invoices.void_invoice(session, ctx, inv_id)
        else:
            invoices.mark_uncollectible(session, ctx, inv_id)
        model.expected -= total
        return None
    if op == "pay":
        payment = lifecycle.new_payment(
            session,
            ctx,
            patient_id=patient_id,
            integration_id=integration_id,
            amount=value,
            currency="cad",
            purpose="full",
            method="card",
        )
        model.payments.append([payment.id, value, 0])
        model.expected -= value
        seen = lifecycle.Observed("succeeded", "succeeded", value, intent_id=f"pi_{payment.id}")
        return lambda: _apply_intent(session, payment.id, seen, ctx.now)
    if not model.payments:
        return None
    entry = model.payments[value % len(model.payments)]
    payment_id, received, refunded = entry
    left = received - refunded
    if left <= 0 or payment_id in model.disputed:
        return None
    if op == "refund":
        amount = min(value, left)
        item = StripeRefund(f"re_{new_id('x')}", "succeeded", amount, "cad", None, None, {})
        entry[2] += amount
        model.expected += amount
        return lambda: _apply_refund(session, payment_id, item, ctx.now)
    # a dispute of what was not refunded, as charge.dispute.created posts it
    model.disputed.add(payment_id)
    model.expected += left
    posting = ledger.Posting(
        ctx.tenant_id,
        patient_id,
        "adjustment",
        left,
        "cad",
        f"stripe:dispute:dp_{payment_id}",
        "Card payment disputed",
        ctx.now,
        payment_id=payment_id,
    )
    return lambda: _post(session, posting, ctx.now)


def _post(session: Session, posting: ledger.Posting, now: datetime) -> None:
    ledger.post(session, posting, by="system:stripe", now=now)


def _apply_intent(
    session: Session, payment_id: str, seen: lifecycle.Observed, now: datetime
) -> None:
    row = session.get(Payment, payment_id)
    assert row is not None
    lifecycle.apply(session, row, seen, now)


def _apply_refund(session: Session, payment_id: str, item: StripeRefund, now: datetime) -> None:
    row = session.get(Payment, payment_id)
    assert row is not None
    refunds.sync_from_stripe(session, row, [item], now, book=True)
