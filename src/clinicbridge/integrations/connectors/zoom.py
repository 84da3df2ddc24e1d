"""Zoom: video. Server-to-server OAuth; webhooks signed ``v0`` with the secret token."""

from __future__ import annotations

import base64
from typing import Annotated, ClassVar

from pydantic import Field, HttpUrl

from clinicbridge.core.errors import ExternalServiceError
from clinicbridge.integrations.connector import (
    Connector,
    ConnectorContext,
    Cred,
    Credentials,
    HttpSettings,
    TestResult,
)
from clinicbridge.webhooks.verifiers import zoom


class ZoomCredentials(Credentials):
    client_id: Cred
    client_secret: Cred
    webhook_secret: Cred | None = None  # Zoom's "secret token"


class ZoomSettings(HttpSettings):
    api_base: HttpUrl = HttpUrl("https://zoom.us")  # the OAuth token endpoint's host
    account_id: Annotated[str, Field(min_length=1, max_length=64)]
    meetings_api_base: HttpUrl = HttpUrl("https://api.zoom.us")  # the REST API (v2)


class Zoom(Connector):
    key = "zoom"
    display_name = "Zoom"
    category = "video"
    credentials_schema = ZoomCredentials
    settings_schema = ZoomSettings
    verifier = staticmethod(zoom.verify)
    webhook_secret_field = "webhook_secret"
    hinted_fields: ClassVar[tuple[str, ...]] = ("client_id",)

    def test_connection(self, ctx: ConnectorContext) -> TestResult:
        """Ask for a server-to-server token: proves the app's credentials and account."""
        basic = base64.b64encode(
            f"{ctx.secret('client_id')}:{ctx.secret('client_secret')}".encode()
        ).decode()
        try:
            with ctx.client(headers={"Authorization": f"Basic {basic}"}) as client:
                response = client.post(
                    "/oauth/token",
                    operation="oauth.token",
                    data={
                        "grant_type": "account_credentials",
                        "account_id": ctx.settings["account_id"],
                    },
                )
        except ExternalServiceError as exc:
            return TestResult(False, exc.detail)
        if response.status_code in (400, 401, 403):
            return TestResult(
                False,
                f"the provider refused the credentials ({response.status_code})",
                needs_reauth=True,
            )
        if not response.is_success or "access_token" not in response.json():
            return TestResult(
                False, f"unexpected answer from the provider ({response.status_code})"
            )
        return TestResult(True, "connected")
