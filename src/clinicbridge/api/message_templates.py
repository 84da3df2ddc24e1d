"""``/api/v1/message-templates``: a clinic's own wording of its messages, with preview."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from clinicbridge.api.deps import DB, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.schemas import ListOut
from clinicbridge.core.context import Ctx
from clinicbridge.messaging import clinic_templates
from clinicbridge.messaging.models import ClinicTemplate

router = APIRouter(tags=["messages"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("messages:read")]
Editor = Annotated[Ctx, require("tenant:write")]
Channel = Literal["sms", "email", "whatsapp", "push"]
ONE = "/message-templates/{kind}/{channel}/{language}"
Kind = Annotated[str, Path(max_length=64)]
Language = Annotated[str, Path(max_length=35)]


class TemplateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: Annotated[str | None, Field(max_length=500)] = None
    body: Annotated[str, Field(min_length=1, max_length=20_000)]
    html: Annotated[str | None, Field(max_length=200_000)] = None
    variables: Annotated[list[str] | None, Field(max_length=50)] = Field(
        default=None, description="custom kinds only: the dotted names callers provide"
    )


class PreviewIn(TemplateIn):
    kind: Annotated[str, Field(max_length=64)]
    channel: Channel
    language: Annotated[str, Field(max_length=35)] = "en"
    sample: dict[str, Any] | None = Field(default=None, description="values instead of samples")


class TemplateOut(BaseModel):
    kind: str
    channel: str
    language: str
    subject: str | None
    body: str
    html: str | None
    variables: list[str] | None
    updated_by: str
    updated_at: datetime


def _out(row: ClinicTemplate) -> TemplateOut:
    return TemplateOut(
        kind=row.kind,
        channel=row.channel,
        language=row.language,
        subject=row.subject,
        body=row.body,
        html=row.html,
        variables=row.variables,
        updated_by=row.updated_by,
        updated_at=row.updated_at,
    )


@router.get("/message-templates", response_model=ListOut[TemplateOut])
def list_templates(db: DB, ctx: Reader) -> ListOut[TemplateOut]:
    """The clinic's own templates (the built-in ones apply where it has none)."""
    with db.read() as session:
        return ListOut[TemplateOut](
            data=[_out(r) for r in clinic_templates.list_templates(session, ctx)]
        )


@router.put(ONE, response_model=TemplateOut)
def save_template(
    kind: Kind, channel: Channel, language: Language, body: TemplateIn, db: DB, ctx: Editor
) -> TemplateOut:
    """Save after validation: an unknown variable or an unsafe construct is a 422 naming
    the field (``subject``, ``body``, ``html``), and nothing is saved."""
    with db.write() as session:
        row = clinic_templates.save_template(
            session, ctx, kind=kind, channel=channel, language=language,
            subject=body.subject, body=body.body, html=body.html, variables=body.variables,
        )  # fmt: skip
        return _out(row)


@router.delete(ONE, status_code=204)
def delete_template(
    kind: Kind, channel: Channel, language: Language, db: DB, ctx: Editor
) -> Response:
    """Back to the built-in template."""
    with db.write() as session:
        clinic_templates.delete_template(session, ctx, kind, channel, language)
    return Response(status_code=204)


@router.post("/message-templates/preview")
def preview_template(body: PreviewIn, ctx: Reader) -> dict[str, Any]:
    """Render with sample data: subject, text, HTML, and for SMS the encoding (GSM-7 or
    UCS-2), length and segment count it will cost."""
    return clinic_templates.preview(
        body.kind, body.channel, body.language, body.subject, body.body, body.html, body.sample
    )
