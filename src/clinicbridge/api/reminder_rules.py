"""``/api/v1/reminder-rules``: when and how the clinic reminds patients of appointments.

Quiet hours are ``"HH:MM"`` on the clinic's wall clock. ``GET`` also answers the rule
in force where the clinic has none (``"source": "built_in"``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from clinicbridge.api.deps import DB, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.schemas import ListOut
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import InvalidInputError
from clinicbridge.messaging import reminder_rules
from clinicbridge.messaging.reminder_models import ReminderRule
from clinicbridge.messaging.reminder_rules import DEFAULT_RULE, Rule

router = APIRouter(tags=["messages"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("messages:read")]
Editor = Annotated[Ctx, require("tenant:write")]
ServiceId = Annotated[str, Path(max_length=64)]
Channel = Literal["sms", "email", "whatsapp", "push"]
Clock = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", examples=["21:00"])]


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    offsets: Annotated[list[int], Field(min_length=1, max_length=10)] = Field(
        description="minutes before the start, e.g. [1440, 120]"
    )
    channels: Annotated[list[Channel], Field(min_length=1, max_length=4)] = Field(
        description="in preference order; the next is tried when one cannot carry it"
    )
    quiet_start: Clock = "21:00"
    quiet_end: Clock = "08:00"
    min_lead_minutes: Annotated[int, Field(ge=0, le=60 * 24 * 7)] = 60
    enabled: bool = True


class RuleOut(BaseModel):
    id: str | None
    scope: Literal["clinic", "service"]
    service_id: str | None
    source: Literal["clinic", "built_in"]
    offsets: list[int]
    channels: list[str]
    quiet_start: str
    quiet_end: str
    min_lead_minutes: int
    enabled: bool
    updated_at: datetime | None


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _minute(field: str, text: str) -> int:
    hours, _, minutes = text.partition(":")
    if not hours.isdigit() or not minutes.isdigit():
        raise InvalidInputError.one(field, "must be HH:MM")
    return int(hours) * 60 + int(minutes)


def _out(row: ReminderRule) -> RuleOut:
    return RuleOut(
        id=row.id,
        scope="clinic" if row.service_id is None else "service",
        service_id=row.service_id,
        source="clinic",
        offsets=[int(o) for o in row.offsets],
        channels=[str(c) for c in row.channels],
        quiet_start=_clock(row.quiet_start),
        quiet_end=_clock(row.quiet_end),
        min_lead_minutes=row.min_lead_minutes,
        enabled=row.enabled,
        updated_at=row.updated_at,
    )


def _built_in(rule: Rule = DEFAULT_RULE) -> RuleOut:
    return RuleOut(
        id=None,
        scope="clinic",
        service_id=None,
        source="built_in",
        offsets=list(rule.offsets),
        channels=list(rule.channels),
        quiet_start=_clock(rule.quiet_start),
        quiet_end=_clock(rule.quiet_end),
        min_lead_minutes=rule.min_lead_minutes,
        enabled=rule.enabled,
        updated_at=None,
    )


def _save(db: DB, ctx: Ctx, service_id: str | None, body: RuleIn) -> RuleOut:
    with db.write() as session:
        row = reminder_rules.save_rule(
            session,
            ctx,
            service_id=service_id,
            offsets=body.offsets,
            channels=body.channels,
            quiet_start=_minute("quiet_start", body.quiet_start),
            quiet_end=_minute("quiet_end", body.quiet_end),
            min_lead_minutes=body.min_lead_minutes,
            enabled=body.enabled,
        )
        return _out(row)


@router.get("/reminder-rules", response_model=ListOut[RuleOut])
def list_rules(db: DB, ctx: Reader) -> ListOut[RuleOut]:
    """The clinic's default rule (or the built-in one it falls back to), then each
    service's own rule."""
    with db.read() as session:
        rows = reminder_rules.list_rules(session, ctx)
    shown = [_out(r) for r in rows]
    if not rows or rows[0].service_id is not None:
        shown.insert(0, _built_in())
    return ListOut[RuleOut](data=shown)


@router.put("/reminder-rules/default", response_model=RuleOut)
def save_default(body: RuleIn, db: DB, ctx: Editor) -> RuleOut:
    """The clinic's rule for every service without one of its own."""
    return _save(db, ctx, None, body)


@router.put("/reminder-rules/services/{service_id}", response_model=RuleOut)
def save_for_service(service_id: ServiceId, body: RuleIn, db: DB, ctx: Editor) -> RuleOut:
    return _save(db, ctx, service_id, body)


@router.delete("/reminder-rules/default", status_code=204)
def delete_default(db: DB, ctx: Editor) -> Response:
    """Back to the built-in rule."""
    with db.write() as session:
        reminder_rules.delete_rule(session, ctx, None)
    return Response(status_code=204)


@router.delete("/reminder-rules/services/{service_id}", status_code=204)
def delete_for_service(service_id: ServiceId, db: DB, ctx: Editor) -> Response:
    """Back to the clinic's default rule."""
    with db.write() as session:
        reminder_rules.delete_rule(session, ctx, service_id)
    return Response(status_code=204)
