"""The process's vault for routers: one per (database, master key file), shared."""

from __future__ import annotations

from fastapi import Request

from clinicbridge.vault.service import Vault
from clinicbridge.vault.shared import shared_vault


def vault_of(request: Request) -> Vault:
    """The vault for this app's database and key file (its data-key cache is shared)."""
    return shared_vault(request.app.state.db, request.app.state.settings.master_key_file)
