"""Twilio: ``X-Twilio-Signature: base64(HMAC(auth token, url + sorted params))``.

Form posts (``application/x-www-form-urlencoded``): the public URL followed by
every POST parameter as ``name + value``, names sorted, the values of a
repeated name sorted. JSON posts: Twilio appends ``bodySHA256=<hex sha256 of
the body>`` to the URL's query and signs the URL alone, so the body is tied to
the signature only through that hash, which we check.

HMAC-SHA1 by default; with a Twilio "SharedKey" the
``X-Twilio-Webhooks-Signature-Settings`` header names the algorithm
(``HMAC_SHA1`` or ``HMAC_SHA256``) and the key is the shared-key secret.

There is no timestamp in Twilio's scheme, so no replay window can be checked:
dedupe on ``MessageSid:status`` is what stops a replayed request. The URL must
be the one Twilio called (scheme, host, path and query as configured there), not
what a proxy forwarded to us.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlparse

from clinicbridge.core.errors import WebhookVerificationError
from clinicbridge.webhooks.verifiers.base import (
    InboundEvent,
    Verified,
    WebhookRequest,
    constant_time_equal,
    content_id,
    parse_json,
    require_header,
)

HEADER = "x-twilio-signature"
SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"
BODY_HASH_PARAM = "bodySHA256"
FORM = "application/x-www-form-urlencoded"
_ALGORITHMS: dict[str, Callable[[], Any]] = {
    "HMAC_SHA1": hashlib.sha1,
    "HMAC_SHA256": hashlib.sha256,
}

Params = list[tuple[str, str]]


def verify(request: WebhookRequest, secrets: Sequence[str], now: datetime) -> Verified:
    del now  # Twilio signs no timestamp (see the module docstring)
    if not secrets:
        raise WebhookVerificationError("no secret configured")
    signature = require_header(request, HEADER)
    digest = _algorithm(request.headers.get(SETTINGS_HEADER, ""))
    query = parse_qs(urlparse(request.url).query, keep_blank_values=True)

    params: Params = []
    if BODY_HASH_PARAM in query:
        body_hash = hashlib.sha256(request.body).hexdigest()
        if not constant_time_equal(body_hash, query[BODY_HASH_PARAM][0].lower()):
            raise WebhookVerificationError(f"body does not match {BODY_HASH_PARAM}")
    elif request.method.upper() != "GET":
        params = _form_params(request)

    signed_text = "".join(name + value for name, value in _sorted_params(params))
    # Twilio is inconsistent about default ports in what it signs (as its own
    # validator notes): accept the URL with and without one.
    expected = [
        base64.b64encode(hmac.new(s.encode(), (url + signed_text).encode(), digest).digest())
        for s in secrets
        if s
        for url in _url_variants(request.url)
    ]
    matches = [constant_time_equal(e, signature.encode()) for e in expected]
    if not any(matches):
        raise WebhookVerificationError("no matching signature")

    if BODY_HASH_PARAM in query:
        payload = parse_json(request.body)
        if not isinstance(payload, dict):
            raise WebhookVerificationError("signed body is not a JSON object")
    else:
        source = params if request.method.upper() != "GET" else _query_params(request.url)
        payload = _as_dict(source)
    return Verified([_event(payload, request)])


def _algorithm(settings: str) -> Callable[[], Any]:
    name = "HMAC_SHA1"
    for part in settings.split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip() == "algorithm" and value.strip():
            name = value.strip().upper()
    try:
        return _ALGORITHMS[name]
    except KeyError:
        raise WebhookVerificationError("unsupported signature algorithm") from None


def _form_params(request: WebhookRequest) -> Params:
    if not request.body:
        return []
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM:
        # Without bodySHA256 only form fields are signed: any other body would
        # ride along unauthenticated.
        raise WebhookVerificationError(f"unsigned body: not form data and no {BODY_HASH_PARAM}")
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookVerificationError("form body is not UTF-8") from None
    # Blank values are signed too (e.g. "ErrorCode="), so keep them.
    return parse_qsl(text, keep_blank_values=True)


def _query_params(url: str) -> Params:
    return parse_qsl(urlparse(url).query, keep_blank_values=True)


def _sorted_params(params: Params) -> list[tuple[str, str]]:
    # As Twilio's libraries do: names sorted, each name's distinct values sorted.
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    return [(name, value) for name in sorted(values) for value in sorted(values[name])]


def _url_variants(url: str) -> list[str]:
    parts = urlparse(url)
    try:
        port = parts.port
    except ValueError:
        raise WebhookVerificationError("invalid request url") from None
    if port is not None:
        without = parts._replace(netloc=parts.netloc.rsplit(":", 1)[0]).geturl()
        return [parts.geturl(), without]
    default = 443 if parts.scheme == "https" else 80
    return [parts.geturl(), parts._replace(netloc=f"{parts.netloc}:{default}").geturl()]


def _as_dict(params: Params) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in params:
        if name not in out:
            out[name] = value
        elif isinstance(out[name], list):
            out[name].append(value)
        else:
            out[name] = [out[name], value]
    return out


def _event(payload: dict[str, Any], request: WebhookRequest) -> InboundEvent:
    sid = payload.get("MessageSid")
    if isinstance(sid, str) and sid:
        status = payload.get("MessageStatus")
        status = status if isinstance(status, str) and status else None
        return InboundEvent(
            provider_event_id=f"{sid}:{status or 'inbound'}",
            type="message.status" if status else "message.inbound",
            occurred_at=None,  # Twilio sends no event time
            payload=payload,
        )
    return InboundEvent(
        provider_event_id=content_id(request.url.encode(), request.body),
        type="twilio.webhook",
        occurred_at=None,
        payload=payload,
    )
