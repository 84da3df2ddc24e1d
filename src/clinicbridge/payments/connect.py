"""Provider payouts with Stripe Connect: a practitioner's Express account, its
onboarding link and status, and how each service's payments are split.

The clinic's Stripe account is the platform. ``start_onboarding`` creates the
provider's Express account once (idempotency key from our ids, so a lost answer never
makes a second account) and returns a fresh onboarding link each time it is asked.

The account's state comes from Stripe: the ``account.updated`` webhook, or
``refresh`` (``GET /v1/accounts/{id}`` and the account's balance). Once the provider
has finished onboarding (``details_submitted``), payouts that are blocked
(``payouts_enabled`` false, requirements ``past_due``, or a ``disabled_reason``) open
the ``connect_payouts_blocked`` alert on the account (one open alert, audited and
announced as ``integration.unhealthy``); it is resolved when Stripe reports the block
cleared. Events older than what we know (by ``created``) change nothing. The account's
``transfers`` capability becoming active resends the transfers Stripe refused for the
account's state (``transfer_retries``), in the same transaction.

The onboarding link's ``refresh_url`` and ``return_url`` carry signed tokens
(``onboarding_links``): the provider coming back from Stripe is not signed in here.
``refresh_onboarding`` makes a new link for the refresh page (audited); the return page
calls ``refresh`` for the account's state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit import record_system
from clinicbridge.audit.service import record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import InvalidInputError, NotFoundError
from clinicbridge.core.ids import new_id
from clinicbridge.db.engine import Database
from clinicbridge.integrations.alerts import RECOVERED, UNHEALTHY, event_data, open_or_touch
from clinicbridge.integrations.models import Alert
from clinicbridge.integrations.registry import StoredEvent, integrations
from clinicbridge.jobs.registry import JobContext
from clinicbridge.payments import (
    ledger,
    onboarding_links,
    stripe_api,
    stripe_connect,
    transfer_retries,
)
from clinicbridge.payments.connect_models import ConnectedAccount, ServicePayoutRule
from clinicbridge.payments.errors import PaymentProviderUnavailableError
from clinicbridge.payments.stripe_events import unmatched
from clinicbridge.scheduling.config import get_provider, get_service
from clinicbridge.settings import Settings
from clinicbridge.webhooks.outbound import publish

log = logging.getLogger("clinicbridge.payments")
RESOURCE = "connected_account"
BLOCKED_RULE = "connect_payouts_blocked"
BPS = 10_000


@dataclass(frozen=True)
class Onboarding:
    account: ConnectedAccount
    url: str
    expires_at: int | None


def _integration_account(
    db: Database, settings: Settings, session: Session, tenant_id: str
) -> tuple[str, stripe_api.Account]:
    integration = stripe_api.stripe_integration(session, tenant_id)
    if integration is None:
        raise InvalidInputError.one(
            "provider_id", "the clinic has no enabled Stripe integration", "no_provider"
        )
    return integration.id, stripe_api.account(db, settings, integration)


def account_of(session: Session, ctx: Ctx, provider_id: str) -> ConnectedAccount | None:
    """The provider's connected account (404 for a provider of another clinic)."""
    get_provider(session, ctx, provider_id)
    return session.scalars(
        sa.select(ConnectedAccount).where(
            ConnectedAccount.tenant_id == ctx.tenant_id,
            ConnectedAccount.provider_id == provider_id,
        )
    ).first()


def require_account(session: Session, ctx: Ctx, provider_id: str) -> ConnectedAccount:
    found = account_of(session, ctx, provider_id)
    if found is None:
        raise NotFoundError("This provider has no payout account yet.")
    return found


def start_onboarding(db: Database, settings: Settings, ctx: Ctx, provider_id: str) -> Onboarding:
    """The provider's Express account (created once) and a new onboarding link. Call
    with no transaction open."""
    with db.read() as session:
        provider = get_provider(session, ctx, provider_id)
        email = provider.email
        existing = account_of(session, ctx, provider_id)
        integration_id, acct = _integration_account(db, settings, session, ctx.tenant_id)
        stripe_id = existing.stripe_account_id if existing else None
    if stripe_id is None:
        made = stripe_connect.create_account(
            acct,
            email=email,
            metadata={"tenant_id": ctx.tenant_id, "provider_id": provider_id},
            idempotency_key=f"cb:{ctx.tenant_id}:{provider_id}:acct:v1",
        )
        stripe_id = made.id
        with db.write() as session:
            if account_of(session, ctx, provider_id) is None:
                row = ConnectedAccount(
                    id=new_id("cac"),
                    tenant_id=ctx.tenant_id,
                    provider_id=provider_id,
                    integration_id=integration_id,
                    stripe_account_id=made.id,
                    requirements_currently_due=[],
                    requirements_past_due=[],
                    stripe_event_created=0,
                    created_by=f"{ctx.actor_type}:{ctx.actor_id}",
                    created_at=ctx.now,
                    updated_at=ctx.now,
                )
                session.add(row)
                session.flush()
                record(
                    session, ctx, "connected_account.create", RESOURCE, row.id,
                    diff={"provider_id": provider_id, "stripe_account_id": made.id},
                )  # fmt: skip
                apply_account(session, row, made, ctx.now)
    url, expires = _account_link(settings, acct, ctx, provider_id, stripe_id)
    with db.read() as session:
        row = require_account(session, ctx, provider_id)
        session.expunge(row)
    return Onboarding(row, url, expires)


def _account_link(
    settings: Settings, acct: stripe_api.Account, ctx: Ctx, provider_id: str, stripe_id: str
) -> tuple[str, int | None]:
    """A new onboarding link (a new idempotency key each time: links are single use),
    sending the provider back to our signed pages."""
    refresh_url, return_url = onboarding_links.urls(settings, ctx.tenant_id, provider_id, ctx.now)
    return stripe_connect.create_account_link(
        acct,
        stripe_id,
        refresh_url=refresh_url,
        return_url=return_url,
        idempotency_key=f"cb:{stripe_id}:link:{new_id('lnk')}",
    )


def refresh_onboarding(db: Database, settings: Settings, ctx: Ctx, provider_id: str) -> str:
    """A new onboarding link for a provider whose link expired or was used (the
    refresh page): the account must exist already. Audited once Stripe made it; Stripe
    unreachable raises and writes nothing. Call with no transaction open."""
    with db.read() as session:
        row = require_account(session, ctx, provider_id)
        stripe_id, row_id = row.stripe_account_id, row.id
        _, acct = _integration_account(db, settings, session, ctx.tenant_id)
    url, _expires = _account_link(settings, acct, ctx, provider_id, stripe_id)
    with db.write() as session:
        record(
            session, ctx, "connected_account.onboarding_link", RESOURCE, row_id,
            diff={"provider_id": provider_id, "via": "refresh_url"},
        )  # fmt: skip
    return url


def refresh(
    db: Database,
    settings: Settings,
    ctx: Ctx,
    provider_id: str,
    *,
    account: bool = True,
    balance: bool = True,
) -> ConnectedAccount:
    """Ask Stripe for the account's state (``account``) and balance (``balance``), and
    keep them. When Stripe cannot be reached for the balance alone, the last snapshot
    is kept."""
    with db.read() as session:
        row = require_account(session, ctx, provider_id)
        stripe_id, row_id = row.stripe_account_id, row.id
        _, acct = _integration_account(db, settings, session, ctx.tenant_id)
        currency = ledger.clinic_currency(session, ctx.tenant_id)
    seen = stripe_connect.retrieve_account(acct, stripe_id) if account else None
    money: stripe_connect.Balance | None = None
    try:
        if balance:
            money = stripe_connect.connected_balance(acct, stripe_id, currency)
    except PaymentProviderUnavailableError:
        if account:
            raise
    with db.write() as session:
        locked = session.get(ConnectedAccount, row_id, with_for_update=True)
        if locked is None:
            raise NotFoundError("This provider has no payout account yet.")
        if seen is not None:
            apply_account(session, locked, seen, ctx.now)
        if money is not None:
            locked.balance_available, locked.balance_pending = money.available, money.pending
            locked.balance_currency, locked.balance_at = money.currency, ctx.now
        session.flush()
        session.expunge(locked)
    return locked


def blocked(row: ConnectedAccount) -> bool:
    """Payouts the provider expects are held up (only once onboarding is finished)."""
    if not row.details_submitted:
        return False
    return not row.payouts_enabled or bool(row.requirements_past_due) or bool(row.disabled_reason)


def status_of(row: ConnectedAccount) -> str:
    if not row.details_submitted:
        return "onboarding"
    return "blocked" if blocked(row) else "active"


def apply_account(
    session: Session,
    row: ConnectedAccount,
    seen: stripe_connect.StripeAccount,
    now: datetime,
    *,
    event_created: int | None = None,
) -> bool:
    """Keep what Stripe says of the account, open or resolve the blocked-payouts alert,
    resend refused transfers when it can receive them again; False (nothing changed)
    for an event older than what we know."""
    if event_created is not None:
        if event_created < row.stripe_event_created:
            return False
        row.stripe_event_created = event_created
    before = {
        "charges_enabled": row.charges_enabled,
        "payouts_enabled": row.payouts_enabled,
        "details_submitted": row.details_submitted,
        "transfers_active": row.transfers_active,
        "requirements_past_due": list(row.requirements_past_due or []),
        "disabled_reason": row.disabled_reason,
    }
    row.transfers_active = seen.transfers_active
    row.charges_enabled, row.payouts_enabled = seen.charges_enabled, seen.payouts_enabled
    row.details_submitted = seen.details_submitted
    row.requirements_currently_due = list(seen.currently_due)
    row.requirements_past_due = list(seen.past_due)
    row.disabled_reason = (seen.disabled_reason or None) and seen.disabled_reason[:255]
    row.updated_at = now
    after = {
        "charges_enabled": row.charges_enabled,
        "payouts_enabled": row.payouts_enabled,
        "details_submitted": row.details_submitted,
        "transfers_active": row.transfers_active,
        "requirements_past_due": list(row.requirements_past_due),
        "disabled_reason": row.disabled_reason,
    }
    session.flush()
    diff = {k: [before[k], after[k]] for k in before if before[k] != after[k]}
    if diff:
        record_system(
            session, row.tenant_id, "connected_account.update", RESOURCE, row.id, now=now,
            actor_id="stripe", diff=diff,
        )  # fmt: skip
    if blocked(row):
        details = {
            "provider_id": row.provider_id,
            "stripe_account_id": row.stripe_account_id,
            "payouts_enabled": row.payouts_enabled,
            "requirements_past_due": list(row.requirements_past_due),
            "requirements_currently_due": list(row.requirements_currently_due),
            "disabled_reason": row.disabled_reason,
        }
        alert = open_or_touch(session, row.tenant_id, RESOURCE, row.id, BLOCKED_RULE, details, now)
        if alert is not None:
            _announce(session, alert, now)
    else:
        _resolve_blocked(session, row, now)
    if row.transfers_active and not before["transfers_active"]:
        transfer_retries.resume(session, row, now)
    return True


def _resolve_blocked(session: Session, row: ConnectedAccount, now: datetime) -> None:
    resolved = session.scalars(
        sa.update(Alert)
        .where(
            Alert.tenant_id == row.tenant_id,
            Alert.subject_id == row.id,
            Alert.rule == BLOCKED_RULE,
            Alert.status == "open",
        )
        .values(status="resolved", resolved_at=now, last_seen_at=now)
        .returning(Alert.id)
    ).all()
    for alert_id in resolved:
        alert = session.get(Alert, alert_id, populate_existing=True)
        assert alert is not None
        record_system(
            session, row.tenant_id, "alert.resolve", RESOURCE, row.id, now=now,
            diff={"rule": BLOCKED_RULE},
        )  # fmt: skip
        _announce(session, alert, now)


def _announce(session: Session, alert: Alert, now: datetime) -> None:
    session.flush()
    publish(
        session,
        tenant_id=alert.tenant_id,
        event_type=UNHEALTHY if alert.status == "open" else RECOVERED,
        data=event_data(alert, None),
        now=now,
    )


def on_account_updated(event: StoredEvent, job: JobContext) -> None:
    """``account.updated`` from a connected account (a Connect webhook)."""
    data = event.payload.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
        return
    with job.db.write() as session:
        row = session.scalars(
            sa.select(ConnectedAccount)
            .where(
                ConnectedAccount.tenant_id == event.tenant_id,
                ConnectedAccount.stripe_account_id == obj["id"],
            )
            .with_for_update()
        ).first()
        if row is None:
            unmatched(session, event, obj, job.now())
            return
        seen = stripe_connect.StripeAccount.of(obj)
        created = int(event.payload.get("created") or 0)
        apply_account(session, row, seen, job.now(), event_created=created)


integrations.on("stripe", "account.updated")(on_account_updated)


# --- payout rules ------------------------------------------------------------------------


def payout_rule(session: Session, ctx: Ctx, service_id: str) -> ServicePayoutRule | None:
    get_service(session, ctx, service_id)  # 404 for another clinic's service
    found = session.get(ServicePayoutRule, service_id)
    return found if found is not None and found.tenant_id == ctx.tenant_id else None


def set_payout_rule(
    session: Session,
    ctx: Ctx,
    service_id: str,
    *,
    provider_share_bps: int | None,
    application_fee_amount: int | None,
) -> ServicePayoutRule:
    """The provider's share in basis points, or the clinic's fixed fee; exactly one."""
    if (provider_share_bps is None) == (application_fee_amount is None):
        raise InvalidInputError.one(
            "provider_share_bps",
            "give provider_share_bps or application_fee_amount (exactly one)",
            "one_of",
        )
    if provider_share_bps is not None and not 0 <= provider_share_bps <= BPS:
        raise InvalidInputError.one(
            "provider_share_bps", "must be between 0 and 10000 (100 %)", "range"
        )
    if application_fee_amount is not None and application_fee_amount < 0:
        raise InvalidInputError.one("application_fee_amount", "must not be negative", "range")
    get_service(session, ctx, service_id)
    row = session.get(ServicePayoutRule, service_id, with_for_update=True)
    before = None
    if row is None:
        row = ServicePayoutRule(service_id=service_id, tenant_id=ctx.tenant_id)
        session.add(row)
    else:
        before = [row.provider_share_bps, row.application_fee_amount]
    row.provider_share_bps, row.application_fee_amount = provider_share_bps, application_fee_amount
    row.updated_by, row.updated_at = f"{ctx.actor_type}:{ctx.actor_id}", ctx.now
    session.flush()
    record(
        session, ctx, "payout_rule.update", "service", service_id,
        diff={"rule": [before, [provider_share_bps, application_fee_amount]]},
    )  # fmt: skip
    return row


def provider_share(amount: int, rule: ServicePayoutRule) -> int:
    """What the provider receives of ``amount`` (minor units): the clinic keeps any
    fraction of a cent, and a fixed fee never makes the share negative."""
    if amount <= 0:
        return 0
    if rule.provider_share_bps is not None:
        return amount * rule.provider_share_bps // BPS
    return max(0, amount - int(rule.application_fee_amount or 0))
