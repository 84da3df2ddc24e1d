"""Microsoft 365 / Outlook calendars through Microsoft Graph: OAuth with PKCE, delta."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field, HttpUrl

from clinicbridge.integrations.connector import Cred, Credentials, HttpSettings
from clinicbridge.integrations.connectors.oauth_calendar import (
    BusyCheckSettings,
    OAuthCalendarConnector,
)
from clinicbridge.webhooks.verifiers import microsoft_graph


class MicrosoftCalendarCredentials(Credentials):
    client_id: Cred
    client_secret: Cred
    # Generated: the token of push channels (Google) / clientState of subscriptions (Graph).
    webhook_secret: Cred | None = None


class MicrosoftCalendarSettings(HttpSettings, BusyCheckSettings):
    api_base: HttpUrl = HttpUrl("https://graph.microsoft.com")
    login_base: HttpUrl = HttpUrl("https://login.microsoftonline.com")
    # "common" (work and personal accounts), "organizations", or the clinic's tenant id.
    directory: Annotated[str, Field(pattern=r"^[A-Za-z0-9.-]{1,64}$")] = "common"


class MicrosoftCalendar(OAuthCalendarConnector):
    key = "microsoft_calendar"
    display_name = "Microsoft 365 / Outlook calendar"
    credentials_schema = MicrosoftCalendarCredentials
    settings_schema = MicrosoftCalendarSettings
    verifier = staticmethod(microsoft_graph.verify)
    webhook_secret_field = "webhook_secret"
    generates_webhook_secret = True
    # offline_access: a refresh token; Calendars.*: the signed-in user's calendars only.
    read_scopes: ClassVar[tuple[str, ...]] = ("offline_access", "Calendars.Read")
    write_scopes: ClassVar[tuple[str, ...]] = ("offline_access", "Calendars.ReadWrite")

    def _base(self, settings: dict[str, Any]) -> str:
        return f"{str(settings['login_base']).rstrip('/')}/{settings['directory']}/oauth2/v2.0"

    def authorize_endpoint(self, settings: dict[str, Any]) -> str:
        return f"{self._base(settings)}/authorize"

    def token_endpoint(self, settings: dict[str, Any]) -> str:
        return f"{self._base(settings)}/token"
