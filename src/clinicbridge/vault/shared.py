"""One Vault per (database, key file) in a process: its data-key cache is worth sharing."""

from __future__ import annotations

import threading
from pathlib import Path

from clinicbridge.db.engine import Database
from clinicbridge.vault.keyring import KeyRing
from clinicbridge.vault.service import Vault

_lock = threading.Lock()
_vaults: dict[tuple[str, str], Vault] = {}


def shared_vault(db: Database, key_file: Path) -> Vault:
    key = (db.engine.url.render_as_string(hide_password=True), str(key_file.resolve()))
    with _lock:
        vault = _vaults.get(key)
        if vault is None:
            vault = _vaults[key] = Vault(db, KeyRing.load(key_file))
        return vault
