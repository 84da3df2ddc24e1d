"""Reminder rules: when (offsets before the start), how (channels in order), and when
not (quiet hours in the clinic's timezone, a minimum lead) a clinic reminds patients.

A clinic has a default rule (``service_id`` None) and may give a service its own; a
service's rule wins over the clinic's, which wins over the built-in one (24 h and 2 h,
SMS then e-mail, quiet 21:00-08:00). Rules apply to reminders planned from then on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit.service import record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import InvalidInputError, NotFoundError
from clinicbridge.core.ids import new_id
from clinicbridge.core.models import Tenant
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.messaging.models import CHANNELS
from clinicbridge.messaging.reminder_models import (
    DEFAULT_CHANNELS,
    DEFAULT_MIN_LEAD,
    DEFAULT_OFFSETS,
    DEFAULT_QUIET_END,
    DEFAULT_QUIET_START,
    ReminderRule,
)
from clinicbridge.scheduling.models import Service

RESOURCE = "reminder_rule"


@dataclass(frozen=True)
class Rule:
    offsets: tuple[int, ...] = DEFAULT_OFFSETS
    channels: tuple[str, ...] = DEFAULT_CHANNELS
    quiet_start: int = DEFAULT_QUIET_START
    quiet_end: int = DEFAULT_QUIET_END
    min_lead_minutes: int = DEFAULT_MIN_LEAD
    enabled: bool = True


DEFAULT_RULE = Rule()


def check_rule(offsets: Sequence[int], channels: Sequence[str], quiet_start: int,
                quiet_end: int, min_lead_minutes: int) -> None:  # fmt: skip
    if not offsets or any(not 1 <= o <= 60 * 24 * 60 for o in offsets):
        raise InvalidInputError.one("offsets", "give minutes before the start, 1 to 86,400")
    if len(set(offsets)) != len(offsets):
        raise InvalidInputError.one("offsets", "must not repeat")
    if (
        not channels
        or any(c not in CHANNELS for c in channels)
        or len(set(channels)) != len(channels)
    ):
        raise InvalidInputError.one("channels", f"give distinct channels of {', '.join(CHANNELS)}")
    for name, minute in (("quiet_start", quiet_start), ("quiet_end", quiet_end)):
        if not 0 <= minute < 24 * 60:
            raise InvalidInputError.one(name, "minutes after midnight, 0 to 1439")
    if min_lead_minutes < 0:
        raise InvalidInputError.one("min_lead_minutes", "must not be negative")


def set_rule(
    session: Session,
    tenant_id: str,
    *,
    now: datetime,
    service_id: str | None = None,
    offsets: Sequence[int] = DEFAULT_OFFSETS,
    channels: Sequence[str] = DEFAULT_CHANNELS,
    quiet_start: int = DEFAULT_QUIET_START,
    quiet_end: int = DEFAULT_QUIET_END,
    min_lead_minutes: int = DEFAULT_MIN_LEAD,
    enabled: bool = True,
) -> ReminderRule:
    """Create or replace the clinic's default rule (``service_id`` None) or a service's.
    Applies to reminders planned from now on."""
    check_rule(offsets, channels, quiet_start, quiet_end, min_lead_minutes)
    rule = session.scalars(
        sa.select(ReminderRule).where(
            ReminderRule.tenant_id == tenant_id,
            ReminderRule.service_id.is_(None)
            if service_id is None
            else ReminderRule.service_id == service_id,
        )
    ).first()
    if rule is None:
        rule = ReminderRule(
            id=new_id("rmr"), tenant_id=tenant_id, service_id=service_id, created_at=now
        )
        session.add(rule)
    rule.offsets, rule.channels = list(offsets), list(channels)
    rule.quiet_start, rule.quiet_end = quiet_start, quiet_end
    rule.min_lead_minutes, rule.enabled, rule.updated_at = min_lead_minutes, enabled, now
    session.flush()
    return rule


class Rules:
    """Each clinic's timezone and rules, loaded once per clinic (per transaction or batch
    run); a service's own rule wins over the clinic's default, which wins over ours."""

    def __init__(self) -> None:
        self._clinics: dict[str, tuple[ZoneInfo, dict[str | None, Rule]]] = {}

    def _load(self, session: Session, tenant_id: str) -> tuple[ZoneInfo, dict[str | None, Rule]]:
        found = self._clinics.get(tenant_id)
        if found is None:
            tz = session.scalar(sa.select(Tenant.timezone).where(Tenant.id == tenant_id))
            rows = session.execute(
                sa.select(ReminderRule).where(ReminderRule.tenant_id == tenant_id)
            ).scalars()
            rules = {
                r.service_id: Rule(
                    tuple(int(o) for o in r.offsets),
                    tuple(str(c) for c in r.channels),
                    r.quiet_start,
                    r.quiet_end,
                    r.min_lead_minutes,
                    r.enabled,
                )
                for r in rows
            }
            found = self._clinics[tenant_id] = (ZoneInfo(tz or "UTC"), rules)
        return found

    def get(
        self, session: Session, tenant_id: str, service_id: str | None
    ) -> tuple[ZoneInfo, Rule]:
        tz, rules = self._load(session, tenant_id)
        rule = rules.get(service_id) or rules.get(None) or DEFAULT_RULE
        return tz, rule


def _rule_row(session: Session, tenant_id: str, service_id: str | None) -> ReminderRule | None:
    return session.scalars(
        scoped_select(ReminderRule, tenant_id).where(
            ReminderRule.service_id.is_(None)
            if service_id is None
            else ReminderRule.service_id == service_id
        )
    ).first()


def _check_service(session: Session, ctx: Ctx, service_id: str | None) -> None:
    if service_id is None:
        return
    found = session.scalar(
        scoped_select(Service, ctx.tenant_id)
        .with_only_columns(Service.id)
        .where(Service.id == service_id)
    )
    if found is None:
        raise NotFoundError("No such service.")


def list_rules(session: Session, ctx: Ctx) -> list[ReminderRule]:
    """The clinic's own rules: its default first, then services' by id."""
    return list(
        session.scalars(
            scoped_select(ReminderRule, ctx.tenant_id).order_by(
                ReminderRule.service_id.is_not(None), ReminderRule.service_id
            )
        )
    )


def save_rule(
    session: Session,
    ctx: Ctx,
    *,
    service_id: str | None,
    offsets: Sequence[int],
    channels: Sequence[str],
    quiet_start: int,
    quiet_end: int,
    min_lead_minutes: int,
    enabled: bool,
) -> ReminderRule:
    """Create or replace the clinic's default rule or a service's; audited."""
    _check_service(session, ctx, service_id)
    before = _rule_row(session, ctx.tenant_id, service_id)
    old = None if before is None else _values(before)
    rule = set_rule(
        session, ctx.tenant_id, now=ctx.now, service_id=service_id, offsets=offsets,
        channels=channels, quiet_start=quiet_start, quiet_end=quiet_end,
        min_lead_minutes=min_lead_minutes, enabled=enabled,
    )  # fmt: skip
    new = _values(rule)
    diff = {k: [None if old is None else old[k], v] for k, v in new.items()
            if old is None or old[k] != v}  # fmt: skip
    record(session, ctx, "reminder_rule.update", RESOURCE, rule.id,
           diff={"service_id": service_id, **diff})  # fmt: skip
    return rule


def delete_rule(session: Session, ctx: Ctx, service_id: str | None) -> None:
    """Drop the clinic's default rule (back to the built-in one) or a service's (back to
    the clinic's default)."""
    _check_service(session, ctx, service_id)
    rule = _rule_row(session, ctx.tenant_id, service_id)
    if rule is None:
        raise NotFoundError("This clinic has no such reminder rule.")
    record(session, ctx, "reminder_rule.delete", RESOURCE, rule.id,
           diff={"service_id": service_id})  # fmt: skip
    session.delete(rule)


def _values(rule: ReminderRule) -> dict[str, object]:
    return {
        "offsets": list(rule.offsets),
        "channels": list(rule.channels),
        "quiet_start": rule.quiet_start,
        "quiet_end": rule.quiet_end,
        "min_lead_minutes": rule.min_lead_minutes,
        "enabled": rule.enabled,
    }
