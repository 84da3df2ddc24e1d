"""CalDAV (RFC 4791): any standards calendar server (Nextcloud, Fastmail, iCloud, Radicale).

Credentials ``url`` (the server, a principal or a calendar collection), ``username`` and
``password`` (HTTP Basic, over https in production). The connection test asks the URL
for the signed-in principal with one ``PROPFIND``.
"""

from __future__ import annotations

import base64
from typing import Annotated

from pydantic import Field

from clinicbridge.core.errors import ExternalServiceError
from clinicbridge.integrations.connector import (
    Connector,
    ConnectorContext,
    Cred,
    Credentials,
    TestResult,
)
from clinicbridge.integrations.connectors.oauth_calendar import BusyCheckSettings

PRINCIPAL_PROPFIND = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<d:propfind xmlns:d="DAV:"><d:prop><d:current-user-principal/></d:prop></d:propfind>'
)


class CalDavCredentials(Credentials):
    url: Annotated[str, Field(min_length=8, max_length=2048, pattern=r"^https?://")]
    username: Cred
    password: Cred


def basic_auth(ctx: ConnectorContext) -> str:
    pair = f"{ctx.secret('username')}:{ctx.secret('password')}".encode()
    return "Basic " + base64.b64encode(pair).decode()


class CalDav(Connector):
    key = "caldav"
    display_name = "CalDAV calendar server"
    category = "calendar"
    credentials_schema = CalDavCredentials
    settings_schema = BusyCheckSettings

    def test_connection(self, ctx: ConnectorContext) -> TestResult:
        try:
            with ctx.client() as client:
                response = client.request(
                    "PROPFIND",
                    ctx.secret("url"),
                    operation="caldav.propfind",
                    headers={
                        "Authorization": basic_auth(ctx),
                        "Depth": "0",
                        "Content-Type": "application/xml; charset=utf-8",
                    },
                    content=PRINCIPAL_PROPFIND,
                )
        except ExternalServiceError as exc:
            return TestResult(False, exc.detail)
        if response.status_code in (401, 403):
            return TestResult(
                False,
                f"the server refused the credentials ({response.status_code})",
                needs_reauth=True,
            )
        if response.status_code != 207:
            return TestResult(False, f"not a CalDAV server answer ({response.status_code})")
        return TestResult(True, "connected")
