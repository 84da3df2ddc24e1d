"""``/api/v1/voice/tool-calls`` and ``/api/v1/voice/metrics``: what the voice
receptionist did, for whom, whether it worked and how fast."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, Field

from clinicbridge.api.deps import DB, Paging, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.schemas import ListOut
from clinicbridge.core.context import Ctx
from clinicbridge.core.schemas import Output
from clinicbridge.voice import service

router = APIRouter(tags=["voice"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("voice:read")]
Text = Annotated[str | None, Query(min_length=1, max_length=128)]
Since = Annotated[AwareDatetime | None, Query(alias="from", description="Inclusive; with a zone.")]
Until = Annotated[AwareDatetime | None, Query(alias="to", description="Exclusive; with a zone.")]


class ToolCallOut(Output):
    id: str
    integration_id: str
    call_id: str
    tool_call_id: str
    tool: str
    patient_id: str | None
    success: bool
    error_code: str | None
    latency_ms: float
    phi_accessed: bool
    created_at: datetime


class Summary(Output):
    tool_calls: int
    succeeded: int
    success_rate: float | None
    error_rate: float | None = Field(description="Share of tool calls that did not succeed.")
    internal_error_rate: float | None = Field(description="Share that failed on our side.")
    p95_latency_ms: float | None


class PhiDay(Output):
    date: date
    count: int


class MetricsOut(Summary):
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    calls: int
    by_tool: dict[str, Summary]
    phi_accesses: int
    phi_accesses_per_day: list[PhiDay]


@router.get("/voice/tool-calls", response_model=ListOut[ToolCallOut])
def list_tool_calls(
    db: DB,
    ctx: Reader,
    page: Paging,
    call_id: Text = None,
    tool: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    patient_id: Annotated[str | None, Query(min_length=1, max_length=32)] = None,
    success: Annotated[bool | None, Query()] = None,
    since: Since = None,
    until: Until = None,
) -> ListOut[ToolCallOut]:
    """The log, oldest first: one row per tool call (call id, tool, patient, success,
    latency, whether patient data was accessed)."""
    with db.read() as session:
        found = service.list_tool_calls(
            session,
            ctx,
            call_id=call_id,
            tool=tool,
            patient_id=patient_id,
            success=success,
            since=since,
            until=until,
            limit=page.limit,
            starting_after=page.starting_after,
        )
        return ListOut.of(found, ToolCallOut.model_validate)


@router.get("/voice/metrics", response_model=MetricsOut, response_model_by_alias=True)
def voice_metrics(db: DB, ctx: Reader, since: Since = None, until: Until = None) -> Any:
    """Success rate, error rate, p95 latency (overall and per tool), and PHI accesses
    per day (the clinic's days) over ``from``..``to`` (default: the last 7 days)."""
    with db.read() as session:
        data = service.metrics(session, ctx, since=since, until=until)
    data["from_"] = data.pop("from")
    return MetricsOut.model_validate(data)
