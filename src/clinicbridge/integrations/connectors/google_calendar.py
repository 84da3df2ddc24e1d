"""Google Calendar (API v3): per-practitioner OAuth with PKCE, events and free/busy."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import HttpUrl

from clinicbridge.integrations.connector import Cred, Credentials, HttpSettings
from clinicbridge.integrations.connectors.oauth_calendar import OAuthCalendarConnector


class GoogleCalendarCredentials(Credentials):
    client_id: Cred
    client_secret: Cred


class GoogleCalendarSettings(HttpSettings):
    api_base: HttpUrl = HttpUrl("https://www.googleapis.com")
    authorize_url: HttpUrl = HttpUrl("https://accounts.google.com/o/oauth2/v2/auth")
    token_url: HttpUrl = HttpUrl("https://oauth2.googleapis.com/token")


class GoogleCalendar(OAuthCalendarConnector):
    key = "google_calendar"
    display_name = "Google Calendar"
    credentials_schema = GoogleCalendarCredentials
    settings_schema = GoogleCalendarSettings
    # Events only (no calendar list, no settings, no other Google data).
    read_scopes: ClassVar[tuple[str, ...]] = (
        "https://www.googleapis.com/auth/calendar.events.readonly",
    )
    write_scopes: ClassVar[tuple[str, ...]] = ("https://www.googleapis.com/auth/calendar.events",)
    # offline: a refresh token; consent: Google sends one again on a re-authorization.
    authorize_params: ClassVar[dict[str, str]] = {"access_type": "offline", "prompt": "consent"}

    def authorize_endpoint(self, settings: dict[str, Any]) -> str:
        return str(settings["authorize_url"])

    def token_endpoint(self, settings: dict[str, Any]) -> str:
        return str(settings["token_url"])
