"""Microsoft Graph change notifications (subscriptions).

* Validation: when a subscription is created (or renewed), Graph POSTs to the
  notification URL with ``?validationToken=...`` and expects the token back as
  ``text/plain`` within 10 seconds. Nothing can be checked (Graph sends no secret
  then) and nothing is stored: the answer only proves the URL is ours to Graph.
* Notifications: ``{"value": [{"subscriptionId", "clientState", "changeType",
  "resource", "resourceData": {"id"}, "subscriptionExpirationDateTime", ...}]}``.
  ``clientState`` is the secret we set on the subscription (the integration's
  webhook secret); every item must carry it (constant-time compare), else the whole
  request is refused. Graph has no notification id: dedupe on a hash of the item.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

from clinicbridge.core.errors import WebhookVerificationError
from clinicbridge.webhooks.verifiers.base import (
    InboundEvent,
    Verified,
    WebhookRequest,
    constant_time_equal,
    content_id,
    parse_json,
)

CHANGED = "calendar.changed"
TEXT = "text/plain"  # Verified.response key: answer this value as text/plain
MAX_ITEMS = 1000


def verify(request: WebhookRequest, secrets: Sequence[str], now: datetime) -> Verified:
    query = parse_qs(urlsplit(request.url).query)
    if "validationToken" in query:
        token = query["validationToken"][0]
        if not token or len(token) > 2048:
            raise WebhookVerificationError("validation token missing or too long")
        return Verified([], response={TEXT: token})
    keys = [s for s in secrets if s]
    if not keys:
        raise WebhookVerificationError("no secret configured")
    payload = _json(request.body)
    items = payload.get("value") if isinstance(payload, dict) else None
    if not isinstance(items, list) or not items or len(items) > MAX_ITEMS:
        raise WebhookVerificationError("not a Graph notification batch")
    events = []
    for item in items:
        state = item.get("clientState") if isinstance(item, dict) else None
        if not isinstance(state, str) or not any(
            [constant_time_equal(state, key) for key in keys]  # a list: all compared
        ):
            raise WebhookVerificationError("clientState does not match")
        subscription = item.get("subscriptionId")
        if not isinstance(subscription, str) or not subscription:
            raise WebhookVerificationError("notification without subscriptionId")
        clean = {k: v for k, v in item.items() if k != "clientState"}
        events.append(
            InboundEvent(
                provider_event_id=content_id(json.dumps(clean, sort_keys=True).encode()),
                type=CHANGED,
                occurred_at=None,
                payload={
                    "subscription_id": subscription[:100],
                    "change_type": str(item.get("changeType", ""))[:64],
                    "expiration": item.get("subscriptionExpirationDateTime"),
                },
            )
        )
    return Verified(events)


def _json(body: bytes) -> object:
    # Checked after: the secret is inside the body, so the body is parsed first
    # (bounded by the inbox's size limit; only structure is read until it matched).
    return parse_json(body)
