"""``clinicbridge voice``: set up a clinic's Vapi assistant."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from clinicbridge import cli_common as common

voice_app = typer.Typer(help="AI voice receptionist (Vapi).", no_args_is_help=True)
SECRET_PLACEHOLDER = "<the integration's webhook_secret>"  # noqa: S105 - not a secret
TIMEOUT_SECONDS = 20


def assistant_tools(server_url: str, secret: str) -> list[dict[str, Any]]:
    """Vapi function-tool definitions, each calling ``server_url`` with the secret."""
    from clinicbridge.voice.catalog import TOOLS

    return [
        {
            "type": "function",
            "async": False,
            "function": {
                "name": spec.name,
                "description": spec.description,
                "parameters": spec.parameters,
            },
            "server": {
                "url": server_url,
                "timeoutSeconds": TIMEOUT_SECONDS,
                "headers": {"X-Vapi-Secret": secret},
            },
        }
        for spec in TOOLS.values()
    ]


@voice_app.command("assistant-config")
def assistant_config(
    integration: Annotated[str, typer.Option(help="The vapi integration's id (int_...).")],
    with_secret: Annotated[
        bool,
        typer.Option(
            "--with-secret", help="Put the real webhook secret in the output (else a placeholder)."
        ),
    ] = False,
) -> None:
    """Print the Vapi tool definitions (JSON schema of each tool, server URL) to paste into Vapi."""
    from clinicbridge.integrations.models import Integration

    settings = common.settings_or_exit(need_master_key=with_secret)
    db = common.open_database(settings)
    common.require_current_schema(db)
    try:
        with db.read() as session:
            row = session.get(Integration, integration)
            if row is None or row.connector != "vapi":
                common.fail(f"no vapi integration {integration!r}")
            secret = SECRET_PLACEHOLDER
            if with_secret:
                secret = _secret(db, settings.master_key_file, row)
            tenant_id = row.tenant_id
    finally:
        db.dispose()
    server_url = f"{settings.public_base_url}/voice/vapi/{integration}"
    common.print_json(
        {
            "integration_id": integration,
            "tenant_id": tenant_id,
            "server_url": server_url,
            "authentication": "header X-Vapi-Secret (or Authorization: Bearer) = webhook_secret",
            "tools": assistant_tools(server_url, secret),
        }
    )


def _secret(db: Any, key_file: Any, row: Any) -> str:
    from clinicbridge.core.clock import SystemClock
    from clinicbridge.integrations.registry import integrations
    from clinicbridge.integrations.service import webhook_secrets
    from clinicbridge.vault.keyring import KeyRing
    from clinicbridge.vault.service import Vault

    connector = integrations.connector("vapi")
    assert connector is not None
    vault = Vault(db, KeyRing.load(key_file, create=False))
    found = webhook_secrets(vault, row, connector, SystemClock().now())
    if not found:
        common.fail("this integration has no webhook_secret")
    return found[0]
