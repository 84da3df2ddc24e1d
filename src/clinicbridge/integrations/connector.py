"""What a connector is: its schemas, its webhook verifier, its connection test.

A connector describes one outside service (Stripe, Twilio, ...). Clinics
configure it as an *integration*: credentials (sealed in the vault) and settings
validated by the connector's pydantic schemas, which also drive the API and the
admin form. Connectors never import domain packages; domains subscribe to event
types through ``integrations.registry``.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from clinicbridge.core.errors import ExternalServiceError
from clinicbridge.core.secrets import Secret
from clinicbridge.db.engine import Database
from clinicbridge.http import OutboundClient
from clinicbridge.webhooks.verifiers.base import Verifier

CATEGORIES = (
    "payments",
    "messaging",
    "email",
    "calendar",
    "video",
    "ehr",
    "accounting",
    "crm",
    "voice",
    "esign",
    "storage",
    "generic",
)


# A credential value: required, bounded, stripped.
Cred = Annotated[str, Field(min_length=1, max_length=4096)]


class Credentials(BaseModel):
    """Base of every credentials schema: unknown fields are refused, values are secrets."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    # The provider's own limit (messages or calls a second), kept across all workers.
    rate_limit_per_second: Annotated[float, Field(gt=0, le=10_000)] | None = None


class HttpSettings(Settings):
    """Every HTTP connector can be pointed at a proxy, a sandbox or a local fake."""

    api_base: HttpUrl


@dataclass(frozen=True)
class TestResult:
    ok: bool
    message: str
    needs_reauth: bool = False


@dataclass
class ConnectorContext:
    """What a connector's calls get: the clinic, the integration, opened credentials."""

    db: Database
    tenant_id: str
    integration_id: str
    credentials: dict[str, Secret]
    settings: dict[str, Any]
    transport: httpx.BaseTransport | None = None  # tests inject a MockTransport
    extra_headers: dict[str, str] = field(default_factory=dict)

    def secret(self, name: str) -> str:
        return self.credentials[name].reveal()

    def client(self, **kwargs: Any) -> OutboundClient:
        return OutboundClient(
            self.db,
            tenant_id=self.tenant_id,
            integration=self.integration_id,
            base_url=str(self.settings.get("api_base", "")).rstrip("/"),
            transport=self.transport,
            **kwargs,
        )


class Connector:
    """Subclass per provider and set the class attributes; see connectors/."""

    key: ClassVar[str]
    display_name: ClassVar[str]
    category: ClassVar[str]
    credentials_schema: ClassVar[type[Credentials]]
    settings_schema: ClassVar[type[Settings]]
    # Inbound webhooks: the verifier and the credential field holding its secret.
    verifier: ClassVar[Verifier | None] = None
    webhook_secret_field: ClassVar[str | None] = None
    # True when ClinicBridge may generate the secret (the clinic pastes it into
    # the sender); False when the provider issues it (Stripe's whsec_...).
    generates_webhook_secret: ClassVar[bool] = False
    # Credential fields whose last four characters may be shown, as providers do.
    hinted_fields: ClassVar[tuple[str, ...]] = ()

    def test_connection(self, ctx: ConnectorContext) -> TestResult:
        raise NotImplementedError

    def complete(self, credentials: dict[str, Any], settings: dict[str, Any]) -> None:
        """Fill in, before validation, what ClinicBridge makes itself from the rest (a
        key pair, a public key derived from a private one). Changes the dicts in place."""

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "key": cls.key,
            "display_name": cls.display_name,
            "category": cls.category,
            "credentials_schema": cls.credentials_schema.model_json_schema(),
            "settings_schema": cls.settings_schema.model_json_schema(),
            "inbound_webhooks": cls.verifier is not None,
            "webhook_secret_field": cls.webhook_secret_field,
        }


def http_test(
    ctx: ConnectorContext,
    path: str,
    *,
    operation: str,
    headers: dict[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    ok: Callable[[httpx.Response], bool] = lambda r: r.is_success,
) -> TestResult:
    """The usual connection test: one cheap authenticated GET."""
    request_headers = dict(headers or {})
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request_headers["Authorization"] = f"Basic {token}"
    try:
        with ctx.client(headers=request_headers) as client:
            response = client.get(path, operation=operation)
    except ExternalServiceError as exc:
        return TestResult(False, exc.detail)
    if response.status_code in (401, 403):
        return TestResult(
            False,
            f"the provider refused the credentials ({response.status_code})",
            needs_reauth=True,
        )
    if not ok(response):
        return TestResult(False, f"unexpected answer from the provider ({response.status_code})")
    return TestResult(True, "connected")
