"""DocuSign: e-signature. Connect messages are signed with up to 100 HMAC keys."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, HttpUrl

from clinicbridge.integrations.connector import (
    Connector,
    ConnectorContext,
    Cred,
    Credentials,
    HttpSettings,
    TestResult,
    http_test,
)
from clinicbridge.webhooks.verifiers import docusign


class DocuSignCredentials(Credentials):
    access_token: Cred
    webhook_secret: Cred | None = None  # a Connect HMAC key


class DocuSignSettings(HttpSettings):
    api_base: HttpUrl = HttpUrl("https://demo.docusign.net")
    account_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]


class DocuSign(Connector):
    key = "docusign"
    display_name = "DocuSign"
    category = "esign"
    credentials_schema = DocuSignCredentials
    settings_schema = DocuSignSettings
    verifier = staticmethod(docusign.verify)
    webhook_secret_field = "webhook_secret"
    hinted_fields: ClassVar[tuple[str, ...]] = ()

    def test_connection(self, ctx: ConnectorContext) -> TestResult:
        account = ctx.settings["account_id"]
        return http_test(
            ctx,
            f"/restapi/v2.1/accounts/{account}",
            operation="account.get",
            headers={"Authorization": f"Bearer {ctx.secret('access_token')}"},
        )
