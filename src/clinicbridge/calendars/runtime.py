"""How calendar code reaches an outside service: the integration's ``ConnectorContext``.

Outside calls go through ``ConnectorContext.client()`` (the ``OutboundClient``: timeouts,
safe retries, breaker, call log). Tests and demos point every calendar call at a fake
with ``configure(transport=...)`` (an ``httpx.MockTransport`` or any transport), as the
messaging senders do; nothing else in the package holds process state.
"""

from __future__ import annotations

import threading

import httpx

from clinicbridge.db.engine import Database
from clinicbridge.integrations.connector import Connector, ConnectorContext
from clinicbridge.integrations.models import Integration
from clinicbridge.integrations.registry import IntegrationRegistry, integrations
from clinicbridge.integrations.service import open_credentials
from clinicbridge.vault.service import Vault

_lock = threading.Lock()
_transport: httpx.BaseTransport | None = None


def configure(*, transport: httpx.BaseTransport | None = None) -> None:
    """Send every calendar call through ``transport`` (None: the network)."""
    global _transport
    with _lock:
        _transport = transport


def transport() -> httpx.BaseTransport | None:
    with _lock:
        return _transport


def connector_for(row: Integration, registry: IntegrationRegistry | None = None) -> Connector:
    connector = (registry or integrations).connector(row.connector)
    if connector is None:
        raise LookupError(f"connector {row.connector!r} is not installed")
    return connector


def context(db: Database, vault: Vault, row: Integration) -> ConnectorContext:
    return ConnectorContext(
        db=db,
        tenant_id=row.tenant_id,
        integration_id=row.id,
        credentials=open_credentials(vault, row),
        settings=dict(row.settings),
        transport=transport(),
    )
