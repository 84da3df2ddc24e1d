"""The ``webhooks.deliver`` job: sign, send, record the attempt, decide what comes next.

Outcomes of one attempt:

* 2xx: delivered; the endpoint's ``failing_since`` is cleared (and its alerts resolved);
* 410 Gone: the endpoint is disabled at once, an ``endpoint_gone`` alert opens;
* forbidden destination (see ``ssrf``): this delivery is dead, the endpoint is failing;
* anything else: the job raises and the worker retries it (exponential backoff with
  full jitter, about three days; a ``Retry-After`` answer sets the next time). An
  endpoint failing for ``FAILING_LIMIT`` is disabled and an ``endpoint_failing``
  alert opens. When the attempts run out the delivery is ``dead``.

The network call runs outside any transaction; the attempt row, the delivery and
the endpoint are updated in one short transaction afterwards. Response bodies are
never read into logs, rows or errors.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import httpx
import sqlalchemy as sa

from clinicbridge.core.errors import (
    CircuitOpenError,
    ExternalServiceError,
    JobError,
    PermanentJobError,
    RetryAfter,
)
from clinicbridge.http import BreakerRegistry, OutboundClient, RetryPolicy, Timeouts
from clinicbridge.http.retry import parse_retry_after
from clinicbridge.jobs.registry import JobContext, JobRegistry, registry
from clinicbridge.jobs.retry import Backoff, exponential_full_jitter
from clinicbridge.settings import Settings, load_settings
from clinicbridge.vault.service import Vault
from clinicbridge.vault.shared import shared_vault
from clinicbridge.webhooks import outcome
from clinicbridge.webhooks.endpoints import SECRET_FIELD
from clinicbridge.webhooks.models import WebhookDelivery, WebhookEndpoint
from clinicbridge.webhooks.outbound import KIND
from clinicbridge.webhooks.signing import encode_body, signed_headers
from clinicbridge.webhooks.ssrf import (
    AllowList,
    ForbiddenDestinationError,
    GuardedTransport,
    Resolver,
    UnresolvableHostError,
    check_url,
    system_resolver,
)

log = logging.getLogger("clinicbridge.webhooks")
TIMEOUTS = Timeouts(connect=10.0, read=10.0, write=10.0, pool=10.0)
NO_RETRIES = RetryPolicy(max_attempts=1)  # the job retries, with its own backoff
USER_AGENT = "ClinicBridge-Webhooks/1"


class DeliveryFailedError(JobError):
    """The endpoint did not accept the message; the worker retries with backoff."""


@dataclass(frozen=True)
class _Target:
    delivery_id: str
    tenant_id: str
    endpoint_id: str
    url: str
    sealed_secret: str
    message_id: str
    payload: dict[str, object]


class _JobClock:
    def __init__(self, now: Callable[[], datetime]) -> None:
        self.now = now


class Deliverer:
    """The handler. One per process is enough; everything it needs can be injected."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        vault: Vault | None = None,
        transport: httpx.BaseTransport | None = None,
        resolve: Resolver = system_resolver,
        breakers: BreakerRegistry | None = None,
    ) -> None:
        self._settings = settings
        self._vault = vault
        self._transport = transport
        self._resolve = resolve
        self._breakers = breakers
        self._lock = threading.Lock()
        self._from_env: Settings | None = None

    def settings(self, job: JobContext) -> Settings:
        """Given settings, else the worker's (``JobContext.settings``), else the environment's."""
        if self._settings is not None:
            return self._settings
        from_worker = getattr(job, "settings", None)
        if isinstance(from_worker, Settings):
            return from_worker
        with self._lock:
            if self._from_env is None:
                self._from_env = load_settings()
            return self._from_env

    def __call__(self, job: JobContext) -> None:
        target = _load(job)
        if target is None:
            return
        settings = self.settings(job)
        allow = AllowList.parse(settings.webhook_allowlist)
        vault = self._vault or shared_vault(job.db, settings.master_key_file)
        secret = vault.decrypt_field(
            target.tenant_id, target.endpoint_id, SECRET_FIELD, target.sealed_secret
        )
        result = self._send(job, target, allow, secret.reveal())
        if result is None:
            return  # refused before sending (circuit open): nothing to record
        decision = outcome.apply(job.db, target.delivery_id, result, last=_last(job))
        _log(target, result, decision)
        if decision == "retry":
            if result.retry_after is not None:
                raise RetryAfter(result.retry_after, f"endpoint asked to retry ({result.what})")
            raise DeliveryFailedError(f"endpoint did not accept the message ({result.what})")
        if decision == "dead":
            raise PermanentJobError(f"delivery given up ({result.what})")

    def _send(
        self, job: JobContext, target: _Target, allow: AllowList, secret: str
    ) -> outcome.Result | None:
        now = job.now()
        try:
            check_url(target.url, allow, self._resolve)
        except ForbiddenDestinationError:
            return outcome.Result(now, None, 0.0, "ForbiddenDestination", forbidden=True)
        except UnresolvableHostError:
            return outcome.Result(now, None, 0.0, "DNSError")
        body = encode_body(dict(target.payload))
        headers = signed_headers(secret, target.message_id, int(now.timestamp()), body)
        headers["user-agent"] = USER_AGENT
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        try:
            with OutboundClient(
                job.db,
                tenant_id=target.tenant_id,
                integration=target.endpoint_id,  # one breaker per endpoint
                clock=_JobClock(job.now),
                transport=GuardedTransport(allow, self._transport),
                timeouts=TIMEOUTS,
                retry=NO_RETRIES,
                breakers=self._breakers,
            ) as client:
                started = time.perf_counter()  # time on the wire, not building the client
                response = client.post(
                    target.url, operation="webhooks.deliver", content=body, headers=headers
                )
            status = response.status_code
            if not 200 <= status < 300:
                error = "HTTPStatus"
                retry_after = parse_retry_after(response.headers.get("retry-after"), now)
        except CircuitOpenError:
            raise  # nothing was sent; the worker reschedules without using an attempt
        except ForbiddenDestinationError:
            return outcome.Result(now, None, _ms(started), "ForbiddenDestination", forbidden=True)
        except ExternalServiceError as exc:
            status, retry_after = exc.status_code, exc.retry_after
            cause = exc.__cause__
            error = "HTTPStatus" if status is not None or cause is None else type(cause).__name__
        return outcome.Result(now, status, _ms(started), error, retry_after=retry_after)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)


def _last(job: JobContext) -> bool:
    return job.attempt >= job.max_attempts


def _load(job: JobContext) -> _Target | None:
    """The delivery to send, or None when there is nothing to do (stopped quietly)."""
    delivery_id = job.payload.get("delivery_id")
    if not isinstance(delivery_id, str):
        raise PermanentJobError("job payload has no delivery_id")
    with job.db.read() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None or delivery.status == "delivered":
            return None  # endpoint deleted, or a duplicate run after delivery
        endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
        if endpoint is not None and endpoint.enabled:
            return _Target(
                delivery_id=delivery.id,
                tenant_id=delivery.tenant_id,
                endpoint_id=endpoint.id,
                url=endpoint.url,
                sealed_secret=endpoint.secret,
                message_id=delivery.message_id,
                payload=dict(delivery.payload),
            )
    with job.db.write() as session:  # the endpoint is disabled: this one will not be sent
        session.execute(
            sa.update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status != "delivered")
            .values(status="cancelled", last_error="EndpointDisabled", updated_at=job.now())
        )
    return None


def _log(target: _Target, result: outcome.Result, decision: str) -> None:
    if result.success:
        return
    log.warning(
        "webhook delivery attempt failed",
        extra={
            "fields": {
                "tenant_id": target.tenant_id,
                "endpoint_id": target.endpoint_id,
                "delivery_id": target.delivery_id,
                "status": result.status_code,
                "error_class": result.error,
                "next": decision,
            }
        },
    )


# -- registration ---------------------------------------------------------------

_default: Deliverer | None = None
_default_lock = threading.Lock()


def configure(deliverer: Deliverer) -> None:
    """Replace the process's default handler (e.g. with explicit settings)."""
    global _default
    with _default_lock:
        _default = deliverer


def _default_handler(job: JobContext) -> None:
    global _default
    with _default_lock:
        if _default is None:  # the worker's settings (or the environment's), at first use
            _default = Deliverer()
        deliverer = _default
    deliverer(job)


def register(
    jobs: JobRegistry,
    deliverer: Deliverer | None = None,
    *,
    backoff: Backoff = exponential_full_jitter,
) -> None:
    """Register the handler in ``jobs`` (tests use a private registry)."""
    jobs.register(KIND, deliverer or _default_handler, backoff=backoff)


if registry.get(KIND) is None:
    register(registry)
