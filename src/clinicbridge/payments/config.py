"""A clinic's billing settings: refund approval threshold, default tax code, invoice
prefix, how long a slot is held while the patient pays. A clinic that never set them
gets ``DEFAULTS`` (no row is written until a change)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from clinicbridge.audit.service import record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import InvalidInputError
from clinicbridge.payments.models import BillingSettings
from clinicbridge.payments.taxes import known_code

DEFAULTS: dict[str, Any] = {
    "refund_approval_threshold": None,
    "default_tax_code": None,
    "invoice_prefix": "INV",
    "card_hold_minutes": 15,
    "link_hold_minutes": 30,  # Stripe Checkout Sessions live at least 30 minutes
}
FIELDS = tuple(DEFAULTS)


def billing_settings(session: Session, tenant_id: str) -> BillingSettings:
    """The clinic's settings (a transient row with the defaults if none is stored)."""
    found = session.get(BillingSettings, tenant_id)
    if found is not None:
        return found
    return BillingSettings(
        tenant_id=tenant_id,
        updated_by="defaults",
        updated_at=datetime.fromtimestamp(0).astimezone(),
        **DEFAULTS,
    )


def update_billing_settings(session: Session, ctx: Ctx, changes: dict[str, Any]) -> BillingSettings:
    """Change the given settings; audited as ``billing_settings.update``."""
    code = changes.get("default_tax_code")
    if code and not known_code(session, ctx.tenant_id, code):
        raise InvalidInputError.one("default_tax_code", "no tax rate has this tax code", "unknown")
    row = session.get(BillingSettings, ctx.tenant_id, with_for_update=True)
    if row is None:
        row = BillingSettings(
            tenant_id=ctx.tenant_id, updated_by="", updated_at=ctx.now, **DEFAULTS
        )
        session.add(row)
    diff = {k: [getattr(row, k), v] for k, v in changes.items() if getattr(row, k) != v}
    for name, value in changes.items():
        setattr(row, name, value)
    row.updated_by, row.updated_at = f"{ctx.actor_type}:{ctx.actor_id}", ctx.now
    session.flush()
    if diff:
        record(
            session, ctx, "billing_settings.update", "billing_settings", ctx.tenant_id, diff=diff
        )
    return row
