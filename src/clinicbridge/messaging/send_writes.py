"""The send job's hot path in the database: one Core read, and the two writes every
message needs (``sending`` before the provider is called, ``sent`` after) made through
group commits, so that the handler threads of a worker share transactions instead of
queueing one by one for SQLite's single write lock.

Each write is waited for (its future resolves after the commit), so ``sending`` is
durable before the provider is called and ``sent`` before the job is reported done:
the at-most-once protocol of ``sending`` is unchanged, only cheaper.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.core.ids import new_id
from clinicbridge.db.engine import Database
from clinicbridge.integrations.models import Integration
from clinicbridge.messaging.models import Message, MessageEvent
from clinicbridge.patients.models import CommunicationConsent
from clinicbridge.webhooks.group_commit import GroupCommitter

_MESSAGES = cast(sa.Table, Message.__table__)
_INTEGRATIONS = cast(sa.Table, Integration.__table__)
_EVENTS = cast(sa.Table, MessageEvent.__table__)
_CORE = {"synchronize_session": False}

LOAD = (
    sa.select(
        _MESSAGES.c.id, _MESSAGES.c.tenant_id, _MESSAGES.c.patient_id, _MESSAGES.c.channel,
        _MESSAGES.c.status, _MESSAGES.c.to_address, _MESSAGES.c.subject, _MESSAGES.c.body,
        _MESSAGES.c.html, _MESSAGES.c.language, _MESSAGES.c.attachments,
        _MESSAGES.c.provider_template, _MESSAGES.c.send_started_at,
        _INTEGRATIONS.c.id.label("integration_id"),
        _INTEGRATIONS.c.connector.label("connector"),
        _INTEGRATIONS.c.enabled.label("enabled"),
        _INTEGRATIONS.c.settings.label("settings"),
        _INTEGRATIONS.c.credentials.label("credentials"),
    )
    .select_from(
        _MESSAGES.outerjoin(_INTEGRATIONS, _INTEGRATIONS.c.id == _MESSAGES.c.integration_id)
    )
    .where(_MESSAGES.c.id == sa.bindparam("b_id"))
)  # fmt: skip
_CONSENTS = cast(sa.Table, CommunicationConsent.__table__)
# The patient's latest word on the channel (as ``patients.records.latest_consent``), built
# once: composing it costs more than running it.
_LATEST_CONSENT = (
    sa.select(_CONSENTS.c.granted)
    .where(
        _CONSENTS.c.tenant_id == sa.bindparam("b_tenant"),
        _CONSENTS.c.patient_id == sa.bindparam("b_patient"),
        _CONSENTS.c.channel == sa.bindparam("b_channel"),
    )
    .order_by(_CONSENTS.c.recorded_at.desc(), _CONSENTS.c.id.desc())
    .limit(1)
)
_MARK_SENDING = (
    sa.update(_MESSAGES)
    .where(_MESSAGES.c.id == sa.bindparam("b_id"), _MESSAGES.c.status == "queued")
    .values(
        status="sending", send_started_at=sa.bindparam("b_now"), updated_at=sa.bindparam("b_now")
    )
)
_MARK_SENT = (
    sa.update(_MESSAGES)
    .where(_MESSAGES.c.id == sa.bindparam("b_id"))
    .values(
        # a provider's callback may have moved it on already: never back
        status=sa.case((_MESSAGES.c.status == "sending", "sent"), else_=_MESSAGES.c.status),
        provider_message_id=sa.bindparam("b_provider_id"),
        sent_at=sa.bindparam("b_now"),
        updated_at=sa.bindparam("b_now"),
    )
)


@dataclass(frozen=True)
class Starting:
    """A queued message about to be sent."""

    message_id: str
    tenant_id: str
    patient_id: str | None
    channel: str
    at: datetime


@dataclass(frozen=True)
class Sent:
    message_id: str
    tenant_id: str
    provider_id: str
    at: datetime


def _event(tenant_id: str, message_id: str, status: str, at: datetime) -> dict[str, Any]:
    return {"id": new_id("mev"), "tenant_id": tenant_id, "message_id": message_id,
            "status": status, "detail": None, "source": "worker", "at": at}  # fmt: skip


def _mark_sending(session: Session, items: Sequence[Starting]) -> list[bool]:
    """True for each message now ``sending``; False when it opted out meanwhile or is no
    longer queued (the careful path looks at those)."""
    results, events = [], []
    for item in items:
        ok = (
            item.patient_id is None
            or session.execute(
                _LATEST_CONSENT,
                {
                    "b_tenant": item.tenant_id,
                    "b_patient": item.patient_id,
                    "b_channel": item.channel,
                },
            ).scalar()
            is not False
        )
        if ok:
            marked = session.execute(
                _MARK_SENDING, {"b_id": item.message_id, "b_now": item.at}, execution_options=_CORE
            )
            ok = marked.rowcount == 1  # type: ignore[attr-defined]
        if ok:
            events.append(_event(item.tenant_id, item.message_id, "sending", item.at))
        results.append(ok)
    if events:
        session.execute(_EVENTS.insert(), events)
    return results


def _mark_sent(session: Session, items: Sequence[Sent]) -> list[bool]:
    session.execute(
        _MARK_SENT,
        [{"b_id": i.message_id, "b_provider_id": i.provider_id, "b_now": i.at} for i in items],
        execution_options=_CORE,
    )
    session.execute(
        _EVENTS.insert(), [_event(i.tenant_id, i.message_id, "sent", i.at) for i in items]
    )
    return [True] * len(items)


@dataclass
class _Committers:
    db: Database
    sending: GroupCommitter[Starting, bool]
    sent: GroupCommitter[Sent, bool]


_committers: dict[int, _Committers] = {}
_lock = threading.Lock()


def _for(db: Database) -> _Committers:
    with _lock:
        found = _committers.get(id(db))
        if found is None or found.db is not db:
            found = _committers[id(db)] = _Committers(
                db,
                GroupCommitter(db, _mark_sending, name="send-starting", max_batch=64),
                GroupCommitter(db, _mark_sent, name="send-sent", max_batch=64),
            )
        return found


def mark_sending(db: Database, item: Starting) -> bool:
    """Committed ``sending`` (True), or the message needs the careful path (False)."""
    return _for(db).sending.submit(item).result()


def mark_sent(db: Database, item: Sent) -> None:
    _for(db).sent.submit(item).result()
