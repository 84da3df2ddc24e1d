"""Per-clinic encrypted credentials: AES-256-GCM envelope encryption, key ring, rotation.

    vault = Vault(db, KeyRing.load(settings.master_key_file))
    sealed = vault.seal(session, tenant_id, integration_id, {"api_key": "sk_live_..."})
    creds = vault.open(tenant_id, integration_id, sealed)   # {"api_key": Secret(...)}

Names are imported on first use, so that ``clinicbridge --help`` (which loads
``vault.cli``) does not pay for SQLAlchemy and cryptography.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clinicbridge.core.errors import DecryptionError, VaultError
    from clinicbridge.core.secrets import Secret
    from clinicbridge.vault.keyring import KeyRing
    from clinicbridge.vault.service import RotationResult, Vault, VaultStatus

__all__ = [
    "DecryptionError",
    "KeyRing",
    "RotationResult",
    "Secret",
    "Vault",
    "VaultError",
    "VaultStatus",
]

_HOMES = {
    "DecryptionError": "clinicbridge.core.errors",
    "VaultError": "clinicbridge.core.errors",
    "Secret": "clinicbridge.core.secrets",
    "KeyRing": "clinicbridge.vault.keyring",
    "RotationResult": "clinicbridge.vault.service",
    "Vault": "clinicbridge.vault.service",
    "VaultStatus": "clinicbridge.vault.service",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
