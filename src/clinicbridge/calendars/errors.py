"""The calendars package's errors (all in the ``core.errors`` tree).

ExternalServiceError
├── OAuthError                  the token endpoint answered an OAuth error code
│   └── ReauthorizationRequired the practitioner must authorize again (invalid_grant)
└── SyncTokenExpired            410 Gone: the provider dropped our cursor; resync in full
ConflictError
└── CalendarNotAuthorized       409 calendar-not-authorized: no usable OAuth account yet
OAuthStateError                 400: an unknown, used or expired ``state`` at the callback
"""

from __future__ import annotations

from clinicbridge.core.errors import ClinicBridgeError, ConflictError, ExternalServiceError


class OAuthError(ExternalServiceError):
    """``oauth_error`` is the provider's code (``invalid_grant``...), never its description."""

    def __init__(
        self,
        detail: str,
        *,
        integration: str,
        oauth_error: str | None,
        status_code: int | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(
            detail, integration=integration, status_code=status_code, retryable=retryable
        )
        self.oauth_error = oauth_error


class ReauthorizationRequired(OAuthError):
    type_slug = "calendar-reauthorization-required"
    title = "Calendar authorization revoked"


class SyncTokenExpired(ExternalServiceError):
    def __init__(self, integration: str) -> None:
        super().__init__(
            f"{integration}: the provider expired the sync cursor (410); full resync",
            integration=integration,
            status_code=410,
            retryable=True,
        )


class CalendarNotAuthorized(ConflictError):
    type_slug = "calendar-not-authorized"
    title = "Calendar not authorized"


class OAuthStateError(ClinicBridgeError):
    status = 400
    type_slug = "oauth-state"
    title = "Authorization link not valid"
    retryable = False
