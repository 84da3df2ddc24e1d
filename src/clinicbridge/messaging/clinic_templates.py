"""A clinic's own templates: saved only once they validate, resolved over the built-ins,
previewed with sample data (and, for SMS, the length and segments it will cost)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit.service import record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import InvalidInputError, NotFoundError
from clinicbridge.core.ids import new_id
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.messaging.defaults import DEFAULT_TEMPLATES, DefaultTemplate
from clinicbridge.messaging.kinds import KINDS, variables_for
from clinicbridge.messaging.languages import normalize_tag, resolve
from clinicbridge.messaging.models import ClinicTemplate
from clinicbridge.messaging.segments import sms_segments
from clinicbridge.messaging.templates import (
    MessageTemplate,
    RenderedMessage,
    TemplateRenderError,
    load_template,
    plain_context,
    validate_template,
)
from clinicbridge.messaging.variables import (
    booking_variables,
    payment_link_variables,
    payment_variables,
)


def _language(tag: str) -> str:
    normalized = normalize_tag(tag)
    if normalized is None:
        raise InvalidInputError.one("language", "must be a BCP 47 tag such as en, fr or fr-CA")
    return normalized


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise InvalidInputError.one("kind", f"must be one of {', '.join(KINDS)}")
    return kind


# Provider-approved templates a clinic's template may name, by channel.
PROVIDER_TEMPLATE_IDS = {
    "whatsapp": (re.compile(r"^HX[0-9a-fA-F]{32}$"), "a Twilio Content SID (HX...)"),
    "email": (re.compile(r"^d-[0-9a-f]{32}$"), "a SendGrid dynamic template id (d-...)"),
}


@dataclass(frozen=True)
class Resolved:
    """A template found along the language chain, compiled, with the provider-approved
    template it maps to, if any: on WhatsApp a Twilio Content SID whose numbered
    placeholders the named variables fill; on e-mail a SendGrid dynamic template that
    gets every variable (used when the message goes through SendGrid)."""

    language: str
    template: MessageTemplate
    channel: str = ""
    provider_template_id: str | None = None
    provider_template_variables: tuple[str, ...] = ()

    def provider_template(self, values: Mapping[str, Any]) -> dict[str, Any] | None:
        """``{"id", "variables"}`` for these values: ``{"1": ..., "2": ...}`` for WhatsApp,
        the variables themselves for e-mail."""
        if self.provider_template_id is None:
            return None
        if self.channel != "whatsapp":
            return {"id": self.provider_template_id, "variables": plain_context(values)}
        names = enumerate(self.provider_template_variables, 1)
        return {
            "id": self.provider_template_id,
            "variables": {str(i): _lookup(values, name) for i, name in names},
        }


def _lookup(values: Mapping[str, Any], name: str) -> str:
    head, _, tail = name.partition(".")
    value: Any = values.get(head)
    if tail:
        value = value.get(tail) if isinstance(value, Mapping) else None
    return "" if value is None else str(value)


def _check_provider_template(
    kind: str,
    channel: str,
    template_id: str | None,
    variables: Sequence[str] | None,
    declared: list[str] | None,
) -> list[str] | None:
    """A provider template fits its channel; WhatsApp's variables must be the kind's."""
    if template_id is None:
        if variables:
            raise InvalidInputError.one(
                "provider_template_variables", "only with a provider_template_id"
            )
        return None
    shape = PROVIDER_TEMPLATE_IDS.get(channel)
    if shape is None:
        raise InvalidInputError.one(
            "provider_template_id", "only WhatsApp and e-mail templates name a provider template"
        )
    if not shape[0].match(template_id):
        raise InvalidInputError.one("provider_template_id", f"must be {shape[1]}")
    if channel == "email":
        if variables:
            raise InvalidInputError.one(
                "provider_template_variables",
                "e-mail provider templates get every variable; do not list them",
            )
        return None
    spec = variables_for(kind, declared)
    names = list(variables or [])
    for i, name in enumerate(names):
        head, _, tail = name.partition(".")
        fields = spec.get(head)
        known = head in spec and (tail in fields if tail and fields else not tail and not fields)
        if not known:
            raise InvalidInputError.one(
                f"provider_template_variables.{i}", f"'{name}' is not a variable of {kind}",
                "unknown",
            )  # fmt: skip
    return names


def list_templates(session: Session, ctx: Ctx) -> list[ClinicTemplate]:
    stmt = scoped_select(ClinicTemplate, ctx.tenant_id).order_by(
        ClinicTemplate.kind, ClinicTemplate.channel, ClinicTemplate.language
    )
    return list(session.scalars(stmt))


def save_template(
    session: Session,
    ctx: Ctx,
    *,
    kind: str,
    channel: str,
    language: str,
    subject: str | None,
    body: str,
    html: str | None,
    variables: Iterable[str] | None = None,
    provider_template_id: str | None = None,
    provider_template_variables: Sequence[str] | None = None,
) -> ClinicTemplate:
    """Create or replace; a template that does not validate is refused (422 by field).
    A WhatsApp template may name its approved Content SID and, in order, the variables
    that fill the approved text's {{1}}, {{2}}...; an e-mail template a SendGrid dynamic
    template. ``body`` (and ``html``) stay our own copy, used everywhere else."""
    kind, language = _kind(kind), _language(language)
    declared = sorted(variables) if variables is not None else None
    validate_template(kind, channel, subject, body, html, variables=declared)
    names = _check_provider_template(
        kind, channel, provider_template_id, provider_template_variables, declared
    )
    row = session.scalars(
        scoped_select(ClinicTemplate, ctx.tenant_id).where(
            ClinicTemplate.kind == kind,
            ClinicTemplate.channel == channel,
            ClinicTemplate.language == language,
        )
    ).first()
    action = "message_template.update"
    if row is None:
        action = "message_template.create"
        row = ClinicTemplate(
            id=new_id("mtp"),
            tenant_id=ctx.tenant_id,
            kind=kind,
            channel=channel,
            language=language,
            created_at=ctx.now,
        )
        session.add(row)
    row.subject, row.body, row.html, row.variables = subject, body, html, declared
    row.provider_template_id, row.provider_template_variables = provider_template_id, names
    row.updated_by, row.updated_at = f"{ctx.actor_type}:{ctx.actor_id}", ctx.now
    session.flush()
    record(session, ctx, action, "message_template", row.id,
           diff={"kind": kind, "channel": channel, "language": language})  # fmt: skip
    return row


def delete_template(session: Session, ctx: Ctx, kind: str, channel: str, language: str) -> None:
    """Back to the built-in template."""
    result = session.execute(
        sa.delete(ClinicTemplate).where(
            ClinicTemplate.tenant_id == ctx.tenant_id,
            ClinicTemplate.kind == kind,
            ClinicTemplate.channel == channel,
            ClinicTemplate.language == _language(language),
        )
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise NotFoundError("The clinic has no own template for this kind, channel and language.")
    record(session, ctx, "message_template.delete", "message_template", None,
           diff={"kind": kind, "channel": channel, "language": language})  # fmt: skip


def resolve_template(
    session: Session,
    tenant_id: str,
    kind: str,
    channel: str,
    language: str | None,
    clinic_default: str | None,
) -> Resolved | None:
    """The clinic's or the built-in template along the language chain (the clinic's wins
    at each step), compiled; None when neither exists."""
    own: dict[tuple[str, str, str], ClinicTemplate | DefaultTemplate] = {
        (row.kind, row.channel, row.language): row
        for row in session.scalars(
            scoped_select(ClinicTemplate, tenant_id).where(
                ClinicTemplate.kind == kind, ClinicTemplate.channel == channel
            )
        )
    }
    found = resolve({**DEFAULT_TEMPLATES, **own}, kind, channel, language, clinic_default)
    if found is None:
        return None
    lang, t = found
    declared = getattr(t, "variables", None)
    compiled = load_template(kind, channel, t.subject, t.body, t.html, variables=declared)
    if not isinstance(t, ClinicTemplate) or t.provider_template_id is None:
        return Resolved(lang, compiled, channel)
    names = tuple(t.provider_template_variables or ())
    return Resolved(lang, compiled, channel, t.provider_template_id, names)


def sample_variables(kind: str, language: str) -> dict[str, Any]:
    """Made-up values to preview a template with."""
    start = datetime(2026, 3, 10, 14, 30, tzinfo=UTC)
    if kind == "payment.receipt":
        return payment_variables(
            language=language, clinic_default_language="en", clinic_name="Maple Family Clinic",
            clinic_phone="+1 416 555 0100", patient_first_name="Alex", amount_minor=12550,
            currency="CAD", receipt_url="https://clinic.example/r/sample",
        )  # fmt: skip
    if kind == "payment.link":
        return payment_link_variables(
            language=language, clinic_default_language="en", clinic_name="Maple Family Clinic",
            clinic_phone="+1 416 555 0100", patient_first_name="Alex", amount_minor=12550,
            currency="CAD", pay_url="https://checkout.stripe.com/c/pay/sample",
        )  # fmt: skip
    return booking_variables(
        language=language, clinic_default_language="en", timezone="America/Toronto",
        clinic_name="Maple Family Clinic", clinic_phone="+1 416 555 0100",
        patient_first_name="Alex", start=start, service="Check-up", provider="Dr. Sample",
        location="Main Street", confirmation_code="K7Q-4MX",
        confirm_url="https://clinic.example/b/sample-confirm",
        cancel_url="https://clinic.example/b/sample-cancel",
        previous_start=start.replace(day=9),
    )  # fmt: skip


def preview(
    kind: str,
    channel: str,
    language: str,
    subject: str | None,
    body: str,
    html: str | None,
    variables: dict[str, Any] | None = None,
    provider_template_id: str | None = None,
    provider_template_variables: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Validate and render with sample data (or the given variables); for SMS and
    WhatsApp also the encoding, length and segment count, and for an approved WhatsApp
    template the values its placeholders would get."""
    kind, language = _kind(kind), _language(language)
    template = validate_template(kind, channel, subject, body, html)
    names = _check_provider_template(
        kind, channel, provider_template_id, provider_template_variables, None
    )
    values = variables if variables is not None else sample_variables(kind, language)
    try:
        rendered: RenderedMessage = template.render(values)
    except TemplateRenderError as exc:
        raise InvalidInputError.one("variables", exc.detail) from None
    out: dict[str, Any] = {
        "subject": rendered.subject,
        "text": rendered.text,
        "html": rendered.html,
    }
    if channel in ("sms", "whatsapp"):
        encoding, units, segments = sms_segments(rendered.text)
        out["sms"] = {"encoding": encoding, "length": units, "segments": segments}
    if provider_template_id is not None:
        resolved = Resolved(language, template, channel, provider_template_id, tuple(names or ()))
        out["provider_template"] = resolved.provider_template(values)
    return out
