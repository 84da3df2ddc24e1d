"""Any other system: HMAC-SHA256 of the body, or the Standard Webhooks scheme."""

from __future__ import annotations

from pydantic import HttpUrl

from clinicbridge.integrations.connector import (
    Connector,
    ConnectorContext,
    Cred,
    Credentials,
    Settings,
    TestResult,
    http_test,
)
from clinicbridge.webhooks.verifiers import generic_hmac, standard


class SharedSecretCredentials(Credentials):
    webhook_secret: Cred | None = None  # generated when omitted


class ProbeSettings(Settings):
    # Optional: a URL the connection test may GET (the system's health check).
    api_base: HttpUrl | None = None
    health_path: str = "/"


class _Inbound(Connector):
    credentials_schema = SharedSecretCredentials
    settings_schema = ProbeSettings
    webhook_secret_field = "webhook_secret"
    generates_webhook_secret = True

    def test_connection(self, ctx: ConnectorContext) -> TestResult:
        if not ctx.settings.get("api_base"):
            return TestResult(True, "inbound only: no api_base, nothing to call")
        return http_test(ctx, ctx.settings.get("health_path") or "/", operation="health")


class GenericHmac(_Inbound):
    key = "generic_hmac"
    display_name = "Any system (HMAC-SHA256 signature)"
    category = "generic"
    verifier = staticmethod(generic_hmac.verify)


class StandardWebhooks(_Inbound):
    key = "standard_webhooks"
    display_name = "Any Standard Webhooks sender"
    category = "generic"
    verifier = staticmethod(standard.verify)
