"""ClinicBridge's exception tree; ``api.problems`` maps it to RFC 9457 responses.

ClinicBridgeError
├── NotFoundError            404  (also: another clinic's resource)
├── AuthenticationError      401  (never says why)
├── PermissionDeniedError    403  (names the missing permission)
├── ConflictError            409
│   └── IdempotencyConflictError
├── InvalidInputError        422  (field-level errors)
├── PayloadTooLargeError     413
└── WebhookVerificationError 401  (detail for logs: which check failed)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str
    code: str = "invalid"


class ClinicBridgeError(Exception):
    status = 500
    type_slug = "internal"
    title = "Internal server error"
    retryable = True
    retry_after: float | None = None
    consumes_attempt = True

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title

    def problem_extra(self) -> dict[str, object]:
        """Members added to the problem document (e.g. the next free slots of a 409)."""
        return {}


class NotFoundError(ClinicBridgeError):
    status = 404
    type_slug = "not-found"
    title = "Not found"


class AuthenticationError(ClinicBridgeError):
    status = 401
    type_slug = "unauthenticated"
    title = "Authentication required"

    def __init__(self) -> None:
        super().__init__("A valid API key or session is required.")


class PermissionDeniedError(ClinicBridgeError):
    status = 403
    type_slug = "permission-denied"
    title = "Permission denied"

    def __init__(self, permission: str, detail: str | None = None) -> None:
        super().__init__(detail or f"This action requires the permission '{permission}'.")
        self.permission = permission

    def problem_extra(self) -> dict[str, object]:
        return {"permission": self.permission}


class ConflictError(ClinicBridgeError):
    status = 409
    type_slug = "conflict"
    title = "Conflict"


class IdempotencyConflictError(ConflictError):
    type_slug = "idempotency-conflict"
    title = "Idempotency key conflict"


class InvalidInputError(ClinicBridgeError):
    status = 422
    type_slug = "validation"
    title = "Invalid input"

    def __init__(self, errors: list[FieldError]) -> None:
        names = ", ".join(e.field for e in errors)
        super().__init__(f"Invalid value for: {names}.")
        self.errors = errors

    @classmethod
    def one(cls, field_name: str, message: str, code: str = "invalid") -> InvalidInputError:
        return cls([FieldError(field_name, message, code)])


class PayloadTooLargeError(ClinicBridgeError):
    status = 413
    type_slug = "payload-too-large"
    title = "Payload too large"


class ExternalServiceError(ClinicBridgeError):
    """An outside service failed. Never carries request or response bodies."""

    status = 502
    type_slug = "external-service"
    title = "Outside service failed"

    def __init__(
        self,
        detail: str,
        *,
        integration: str,
        status_code: int | None = None,
        retryable: bool = True,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.integration = integration
        self.status_code = status_code
        self.retryable = retryable
        self.retry_after = retry_after


class CircuitOpenError(ExternalServiceError):
    status = 503
    type_slug = "circuit-open"
    title = "Outside service unavailable"
    consumes_attempt = False


class RateLimitedError(ExternalServiceError):
    status = 429
    type_slug = "rate-limited"
    title = "Outside service rate limit"
    consumes_attempt = False


class WebhookVerificationError(ClinicBridgeError):
    """An inbound webhook failed verification; ``detail`` is for logs, never secrets or body."""

    status = 401
    type_slug = "webhook-verification"
    title = "Webhook verification failed"
    retryable = False
    connector: str | None = None  # set by the inbox, for metrics


class VaultError(ClinicBridgeError):
    type_slug = "vault"
    title = "Credential vault error"
    retryable = False


class DecryptionError(VaultError):
    title = "Credential could not be decrypted"


class JobError(ClinicBridgeError):
    type_slug = "job"
    title = "Background job error"


class RetryAfter(JobError):
    """Raised by a handler: run me again after ``seconds`` (counts as an attempt)."""

    def __init__(self, seconds: float, detail: str | None = None) -> None:
        super().__init__(detail or f"retry requested in {seconds:g} s")
        self.retry_after = max(0.0, float(seconds))


class PermanentJobError(JobError):
    """Raised by a handler: retrying cannot help; the job goes to ``dead``."""

    retryable = False


@dataclass
class Problem:
    """An RFC 9457 problem document."""

    status: int
    type_slug: str
    title: str
    detail: str
    errors: list[FieldError] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)

    def to_dict(self, request_id: str | None) -> dict[str, object]:
        body: dict[str, object] = {
            "type": f"https://clinicbridge.dev/problems/{self.type_slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if request_id:
            body["request_id"] = request_id
        if self.errors:
            body["errors"] = [
                {"field": e.field, "message": e.message, "code": e.code} for e in self.errors
            ]
        body.update(self.extra)
        return body

    @classmethod
    def from_error(cls, exc: ClinicBridgeError) -> Problem:
        errors = exc.errors if isinstance(exc, InvalidInputError) else []
        return cls(exc.status, exc.type_slug, exc.title, exc.detail, errors, exc.problem_extra())


def _field_name(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:] or ["body"]
    return ".".join(parts) or "body"


def validation_errors(errors: Sequence[Any]) -> list[FieldError]:
    """Pydantic errors without their ``input``: values may be patient data."""
    out = []
    for err in errors:
        if err.get("type") == "json_invalid":
            out.append(FieldError("body", "the body is not valid JSON", "json_invalid"))
            continue
        message = str(err.get("msg", "invalid value"))
        out.append(FieldError(_field_name(err.get("loc", ())), message, str(err.get("type"))))
    return out
