"""Tax rates per clinic, and the tax of an invoice line.

A *tax code* names the taxes a line pays: ``QC`` = GST 5 % then QST 9.975 %, ``ON`` =
HST 13 %, a US clinic none or one fixed rate. A line without a tax code, or with the
code ``exempt``, pays none. Rates are exact decimals (``"9.975"``), never floats.

The rule (documented in the README): each rate of the line's code, in ``priority``
order (then id), is applied to the line's net amount (``quantity * unit_price -
discount``) and rounded **per line, half up** to the currency's minor unit; a
*compound* rate is applied to the net amount plus the taxes computed before it on that
line. The invoice's tax is the sum of its lines' taxes (no rounding of the sum).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit.service import record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import ConflictError, InvalidInputError
from clinicbridge.core.ids import new_id
from clinicbridge.core.tenancy import get_scoped, scoped_select
from clinicbridge.payments.models import TaxRate

EXEMPT = "exempt"
MAX_DECIMALS = 4
RESOURCE = "tax_rate"


def parse_percent(value: str, field: str = "percent") -> Decimal:
    """``"9.975"`` → ``Decimal("9.975")``; between 0 and 100, at most 4 decimals."""
    try:
        percent = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidInputError.one(field, "must be a decimal number such as 9.975") from None
    if not percent.is_finite() or not Decimal(0) <= percent <= Decimal(100):
        raise InvalidInputError.one(field, "must be between 0 and 100", "range")
    exponent = percent.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_DECIMALS:
        raise InvalidInputError.one(field, f"at most {MAX_DECIMALS} decimals", "precision")
    return percent


def round_half_up(value: Decimal) -> int:
    """To the nearest minor unit, halves away from zero (0.5 → 1, 2.5 → 3)."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def line_taxes(amount: int, rates: Sequence[TaxRate]) -> list[dict[str, Any]]:
    """The taxes of one line of net ``amount`` (minor units), as frozen on the line."""
    taxes: list[dict[str, Any]] = []
    so_far = 0
    for rate in rates:
        base = amount + so_far if rate.compound else amount
        tax = round_half_up(Decimal(base) * Decimal(rate.percent) / Decimal(100))
        taxes.append(
            {
                "tax_rate_id": rate.id,
                "name": rate.name,
                "percent": rate.percent,
                "compound": rate.compound,
                "amount": tax,
            }
        )
        so_far += tax
    return taxes


def rates_for(session: Session, tenant_id: str, tax_code: str | None) -> list[TaxRate]:
    """The active rates of ``tax_code`` in the order they apply; [] when exempt."""
    if tax_code is None or tax_code.lower() == EXEMPT:
        return []
    return list(
        session.scalars(
            scoped_select(TaxRate, tenant_id)
            .where(TaxRate.tax_code == tax_code, TaxRate.active.is_(True))
            .order_by(TaxRate.priority, TaxRate.id)
        )
    )


def known_code(session: Session, tenant_id: str, tax_code: str) -> bool:
    if tax_code.lower() == EXEMPT:
        return True
    found = session.scalar(
        sa.select(TaxRate.id).where(TaxRate.tenant_id == tenant_id, TaxRate.tax_code == tax_code)
    )
    return found is not None


def create_tax_rate(session: Session, ctx: Ctx, data: dict[str, Any]) -> TaxRate:
    """A rate of a tax code; the same name twice in one code is a 409."""
    code = str(data["tax_code"])
    if code.lower() == EXEMPT:
        raise InvalidInputError.one("tax_code", f"'{EXEMPT}' means no tax; choose another code")
    percent = parse_percent(str(data["percent"]))
    taken = session.scalar(
        sa.select(TaxRate.id).where(
            TaxRate.tenant_id == ctx.tenant_id,
            TaxRate.tax_code == code,
            TaxRate.name == data["name"],
        )
    )
    if taken is not None:
        raise ConflictError("This tax code already has a rate with this name.")
    rate = TaxRate(
        id=new_id("txr"),
        tenant_id=ctx.tenant_id,
        tax_code=code,
        name=data["name"],
        percent=str(percent),
        compound=bool(data.get("compound", False)),
        priority=int(data.get("priority", 0)),
        jurisdiction=data.get("jurisdiction"),
        active=bool(data.get("active", True)),
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    session.add(rate)
    session.flush()
    record(
        session,
        ctx,
        "tax_rate.create",
        RESOURCE,
        rate.id,
        diff={
            "tax_code": code,
            "name": rate.name,
            "percent": rate.percent,
            "compound": rate.compound,
        },
    )
    return rate


def update_tax_rate(session: Session, ctx: Ctx, rate_id: str, changes: dict[str, Any]) -> TaxRate:
    """Change a rate; finalized invoices keep the taxes they were given."""
    rate = get_scoped(session, TaxRate, ctx.tenant_id, id=rate_id)
    if "percent" in changes and changes["percent"] is not None:
        changes["percent"] = str(parse_percent(str(changes["percent"])))
    diff: dict[str, Any] = {}
    for name, value in changes.items():
        if value is not None and getattr(rate, name) != value:
            diff[name] = [getattr(rate, name), value]
            setattr(rate, name, value)
    if diff:
        rate.updated_at = ctx.now
        record(session, ctx, "tax_rate.update", RESOURCE, rate.id, diff=diff)
    return rate


def list_tax_rates(session: Session, ctx: Ctx) -> list[TaxRate]:
    return list(
        session.scalars(
            scoped_select(TaxRate, ctx.tenant_id).order_by(
                TaxRate.tax_code, TaxRate.priority, TaxRate.id
            )
        )
    )


def get_tax_rate(session: Session, ctx: Ctx, rate_id: str) -> TaxRate:
    return get_scoped(session, TaxRate, ctx.tenant_id, id=rate_id)
