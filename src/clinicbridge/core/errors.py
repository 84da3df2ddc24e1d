"""ClinicBridge's exception tree; ``api.problems`` maps it to RFC 9457 responses.

ClinicBridgeError
├── NotFoundError            404  (also: another clinic's resource)
├── AuthenticationError      401  (never says why)
├── PermissionDeniedError    403  (names the missing permission)
├── ConflictError            409
│   └── IdempotencyConflictError
├── InvalidInputError        422  (field-level errors)
└── PayloadTooLargeError     413
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str
    code: str = "invalid"


class ClinicBridgeError(Exception):
    status = 500
    type_slug = "internal"
    title = "Internal server error"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title


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
        extra: dict[str, object] = {}
        if isinstance(exc, PermissionDeniedError):
            extra["permission"] = exc.permission
        return cls(exc.status, exc.type_slug, exc.title, exc.detail, errors, extra)
