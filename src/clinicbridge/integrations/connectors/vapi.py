"""Vapi: AI voice receptionist. Server messages carry the integration's own secret."""

from __future__ import annotations

from typing import ClassVar

from pydantic import HttpUrl

from clinicbridge.integrations.connector import (
    Connector,
    ConnectorContext,
    Cred,
    Credentials,
    HttpSettings,
    TestResult,
    http_test,
)
from clinicbridge.webhooks.verifiers import vapi


class VapiCredentials(Credentials):
    webhook_secret: Cred | None = None  # generated when omitted; paste it into Vapi
    api_key: Cred | None = None  # only needed for calls to Vapi's API


class VapiSettings(HttpSettings):
    api_base: HttpUrl = HttpUrl("https://api.vapi.ai")


class Vapi(Connector):
    key = "vapi"
    display_name = "Vapi voice receptionist"
    category = "voice"
    credentials_schema = VapiCredentials
    settings_schema = VapiSettings
    verifier = staticmethod(vapi.verify)
    webhook_secret_field = "webhook_secret"
    generates_webhook_secret = True
    hinted_fields: ClassVar[tuple[str, ...]] = ("api_key",)

    def test_connection(self, ctx: ConnectorContext) -> TestResult:
        if "api_key" not in ctx.credentials:
            return TestResult(True, "inbound only: no api_key, nothing to call")
        return http_test(
            ctx,
            "/assistant?limit=1",
            operation="assistant.list",
            headers={"Authorization": f"Bearer {ctx.secret('api_key')}"},
        )
