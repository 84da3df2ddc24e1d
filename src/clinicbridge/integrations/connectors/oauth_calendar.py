"""What the Google and Microsoft calendar connectors share: an OAuth 2.0 web app.

The integration holds the clinic's OAuth app (``client_id``, ``client_secret``); each
practitioner then authorizes it for their own calendar (``calendars.oauth``). The
connector only says where the endpoints are and which scopes are the least it needs.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from clinicbridge.core.errors import ExternalServiceError
from clinicbridge.integrations.connector import Connector, ConnectorContext, Settings, TestResult

# Sent as the code of the connection test: never valid, so a well-configured app gets
# ``invalid_grant`` and a wrong client id or secret gets ``invalid_client``.
TEST_CODE = "clinicbridge-connection-test"


class BusyCheckSettings(Settings):
    """The clinic's policy for the fresh look at a provider's calendar before a booking
    is written: how long to wait, and what to do when the calendar cannot be reached
    (``allow`` and open a ``calendar_unverified`` alert, or ``block`` with a 503)."""

    busy_check_timeout_seconds: Annotated[float, Field(ge=0.5, le=10)] = 3.0
    when_unreachable: Literal["allow", "block"] = "allow"


class OAuthCalendarConnector(Connector):
    category = "calendar"
    hinted_fields: ClassVar[tuple[str, ...]] = ("client_id",)
    # The least each access level needs (the connection's export_bookings decides).
    read_scopes: ClassVar[tuple[str, ...]]
    write_scopes: ClassVar[tuple[str, ...]]
    # Extra parameters of the authorization request (a refresh token, a consent screen).
    authorize_params: ClassVar[dict[str, str]] = {}

    def authorize_endpoint(self, settings: dict[str, Any]) -> str:
        raise NotImplementedError

    def token_endpoint(self, settings: dict[str, Any]) -> str:
        raise NotImplementedError

    def scopes(self, *, write: bool) -> list[str]:
        return list(self.write_scopes if write else self.read_scopes)

    def test_connection(self, ctx: ConnectorContext) -> TestResult:
        """Present the app's credentials to the token endpoint with a code that cannot be
        valid: ``invalid_grant`` proves the client id and secret, ``invalid_client`` not."""
        try:
            with ctx.client() as client:
                response = client.post(
                    self.token_endpoint(ctx.settings),
                    operation="oauth.token",
                    data={
                        "grant_type": "authorization_code",
                        "code": TEST_CODE,
                        "client_id": ctx.secret("client_id"),
                        "client_secret": ctx.secret("client_secret"),
                        "redirect_uri": "https://localhost/clinicbridge-connection-test",
                    },
                )
        except ExternalServiceError as exc:
            return TestResult(False, exc.detail)
        error = _error_code(response.json() if _is_json(response.headers) else {})
        if error == "invalid_grant" or (response.status_code == 400 and error == "invalid_request"):
            return TestResult(True, "the OAuth app's credentials are valid")
        if error in ("invalid_client", "unauthorized_client") or response.status_code == 401:
            return TestResult(
                False, "the provider refused the OAuth app's credentials", needs_reauth=True
            )
        return TestResult(False, f"unexpected answer from the provider ({response.status_code})")


def _is_json(headers: Any) -> bool:
    return "json" in str(headers.get("content-type", ""))


def _error_code(body: Any) -> str | None:
    value = body.get("error") if isinstance(body, dict) else None
    return value if isinstance(value, str) else None
