"""The vault: seal and open a clinic's credential fields, rotate the master key.

Envelope encryption: each clinic has a data key (AES-256) stored wrapped by
the master key; fields are sealed with the data key. Rotating the master key
re-wraps the data keys only, so sealed fields never change and every process
keeps working: unwrapped data keys stay cached in memory, and a process that
meets a data key wrapped by a master version it does not know re-reads the
key file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.orm import Session

from clinicbridge.core.clock import Clock, SystemClock
from clinicbridge.core.errors import DecryptionError, NotFoundError, VaultError
from clinicbridge.core.secrets import Secret
from clinicbridge.db.engine import Database
from clinicbridge.vault import crypto, store
from clinicbridge.vault.keyring import KeyRing

log = logging.getLogger(__name__)

FIRST_KEY_VERSION = 1
# session.info key: data keys this session inserted, not yet known to be committed.
_CREATED = "clinicbridge.vault.created"


@dataclass(frozen=True)
class VaultStatus:
    key_file: str
    active_master_version: int
    master_versions: tuple[int, ...]
    data_keys_by_master_version: dict[int, int]
    clinics_with_keys: int

    @property
    def data_keys(self) -> int:
        return sum(self.data_keys_by_master_version.values())

    @property
    def pending_rewrap(self) -> int:
        """Data keys not yet wrapped by the active master key."""
        return self.data_keys - self.data_keys_by_master_version.get(self.active_master_version, 0)

    @property
    def missing_master_versions(self) -> tuple[int, ...]:
        """Versions some data key needs that the key file lacks (those keys cannot be opened)."""
        return tuple(
            v for v in sorted(self.data_keys_by_master_version) if v not in self.master_versions
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_file": self.key_file,
            "active_master_version": self.active_master_version,
            "master_versions": list(self.master_versions),
            "data_keys": self.data_keys,
            "data_keys_by_master_version": {
                str(v): n for v, n in sorted(self.data_keys_by_master_version.items())
            },
            "clinics_with_keys": self.clinics_with_keys,
            "pending_rewrap": self.pending_rewrap,
            "missing_master_versions": list(self.missing_master_versions),
        }


@dataclass(frozen=True)
class RotationResult:
    master_version: int
    previous_master_version: int
    rewrapped: int
    failed: tuple[tuple[str, int], ...] = ()  # (tenant id, data key version)
    pending_rewrap: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "master_version": self.master_version,
            "previous_master_version": self.previous_master_version,
            "rewrapped": self.rewrapped,
            "failed": [{"tenant_id": t, "data_key_version": v} for t, v in self.failed],
            "pending_rewrap": self.pending_rewrap,
        }


class Vault:
    """Seals and opens credential fields for any clinic; one per process is enough.

    Thread-safe. Pass ``session`` (a write session, ``db.write()``) when the
    sealed values are stored in that same transaction: a clinic's first data
    key is then created inside it, and rolls back with it.
    """

    def __init__(self, db: Database, keyring: KeyRing, clock: Clock | None = None) -> None:
        self._db = db
        self._keyring = keyring
        self._clock = clock or SystemClock()
        self._aeads: dict[tuple[str, int], AESGCM] = {}  # unwrapped, committed data keys
        self._active: dict[str, int] = {}  # tenant id -> data key version for new seals

    def __repr__(self) -> str:
        return f"Vault(keyring={self._keyring!r}, cached_data_keys={len(self._aeads)})"

    # -- fields ----------------------------------------------------------------

    def seal(
        self,
        session: Session | None,
        tenant_id: str,
        integration_id: str,
        fields: Mapping[str, str | Secret],
    ) -> dict[str, str]:
        """Encrypt each field for (clinic, integration, field name); values stay in order."""
        if not fields:
            return {}
        version, aead = self._active_key(session, tenant_id)
        sealed = {}
        for name, value in fields.items():
            plaintext = _plaintext(name, value)
            context = crypto.field_context(tenant_id, integration_id, name, version)
            sealed[name] = crypto.seal_field(aead, version, context, plaintext)
        return sealed

    def open(
        self,
        tenant_id: str,
        integration_id: str,
        sealed: Mapping[str, str],
        *,
        session: Session | None = None,
    ) -> dict[str, Secret]:
        """Decrypt fields sealed by ``seal`` for the same clinic and integration."""
        return {
            name: self.decrypt_field(tenant_id, integration_id, name, value, session=session)
            for name, value in sealed.items()
        }

    def encrypt_field(
        self,
        session: Session | None,
        tenant_id: str,
        integration_id: str,
        field: str,
        value: str | Secret,
    ) -> str:
        return self.seal(session, tenant_id, integration_id, {field: value})[field]

    def decrypt_field(
        self,
        tenant_id: str,
        integration_id: str,
        field: str,
        sealed: str,
        *,
        session: Session | None = None,
    ) -> Secret:
        """The plaintext as a ``Secret``; DecryptionError if it was not sealed for this field."""
        try:
            version, blob = crypto.parse_sealed(sealed)
            aead = self._data_key(session, tenant_id, version)
            context = crypto.field_context(tenant_id, integration_id, field, version)
            return Secret(crypto.open_field(aead, blob, context))
        except DecryptionError as exc:
            raise DecryptionError(f"field {field!r} of {integration_id}: {exc.detail}") from None

    # -- data keys -------------------------------------------------------------

    def _active_key(self, session: Session | None, tenant_id: str) -> tuple[int, AESGCM]:
        version = self._active.get(tenant_id)
        if version is not None:
            return version, self._aeads[(tenant_id, version)]
        if session is None:
            with self._db.read() as own:
                row = store.latest_key(own, tenant_id)
            if row is None:
                with self._db.write() as own:
                    row = self._create_key(own, tenant_id)
            committed = True  # read in, or written by, a transaction that has ended
        else:
            row = store.latest_key(session, tenant_id) or self._create_key(session, tenant_id)
            committed = _committed(session, row)
        aead = self._unwrap(row, cache=committed)
        if committed:
            self._active[tenant_id] = row.version
        return row.version, aead

    def _data_key(self, session: Session | None, tenant_id: str, version: int) -> AESGCM:
        aead = self._aeads.get((tenant_id, version))
        if aead is not None:
            return aead
        if session is None:
            with self._db.read() as own:
                row = store.get_key(own, tenant_id, version)
        else:
            row = store.get_key(session, tenant_id, version)
        if row is None:
            raise DecryptionError(f"{tenant_id} has no data key version {version}")
        return self._unwrap(row, cache=session is None or _committed(session, row))

    def _create_key(self, session: Session, tenant_id: str) -> store.StoredKey:
        """Insert the clinic's first data key, or read the one a concurrent process inserted."""
        if not store.tenant_exists(session, tenant_id):
            raise NotFoundError(f"clinic {tenant_id} not found")
        self._keyring.reload()  # wrap with the newest master key, even if rotated elsewhere
        master_version, master_key = self._keyring.active()
        wrapped = crypto.wrap_key(
            master_key, crypto.new_data_key(), tenant_id, FIRST_KEY_VERSION, master_version
        )
        now = self._clock.now()
        if store.insert_key_if_absent(
            session, tenant_id, FIRST_KEY_VERSION, wrapped, master_version, now
        ):
            session.info.setdefault(_CREATED, set()).add((tenant_id, FIRST_KEY_VERSION))
        row = store.get_key(session, tenant_id, FIRST_KEY_VERSION)
        if row is None:  # cannot happen: inserted, or the conflicting row is committed
            raise VaultError(f"data key of {tenant_id} vanished")
        return row

    def _unwrap(self, row: store.StoredKey, *, cache: bool) -> AESGCM:
        cached = self._aeads.get((row.tenant_id, row.version))
        if cached is not None:
            return cached
        try:
            master_key = self._keyring.key(row.master_version)
        except VaultError as exc:
            raise DecryptionError(
                f"data key {row.version} of {row.tenant_id}: {exc.detail}"
            ) from None
        data_key = crypto.unwrap_key(
            master_key, row.wrapped_key, row.tenant_id, row.version, row.master_version
        )
        aead = AESGCM(data_key)
        if cache:
            self._aeads[(row.tenant_id, row.version)] = aead
        return aead

    # -- master key ------------------------------------------------------------

    def rotate_master_key(self, *, batch_size: int = 100) -> RotationResult:
        """Add a master key version, then re-wrap every data key with it.

        Online: data keys are re-wrapped in short transactions of ``batch_size``
        rows; sealed fields are untouched and stay readable throughout.
        """
        version = self._keyring.add_version()
        return self.rewrap(batch_size=batch_size, previous_master_version=version - 1)

    def rewrap(
        self, *, batch_size: int = 100, previous_master_version: int | None = None
    ) -> RotationResult:
        """Re-wrap data keys not on the active master version (finishes a stopped rotation)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._keyring.reload()
        active, master_key = self._keyring.active()
        rewrapped = 0
        failed: list[tuple[str, int]] = []
        after: tuple[str, int] | None = None
        while True:
            with self._db.write() as session:
                rows = store.keys_to_rewrap(session, active, after, batch_size)
                now = self._clock.now()
                for row in rows:
                    try:
                        old = self._keyring.key(row.master_version)
                        data_key = crypto.unwrap_key(
                            old, row.wrapped_key, row.tenant_id, row.version, row.master_version
                        )
                    except VaultError as exc:
                        log.warning(
                            "data key not re-wrapped",
                            extra={"fields": {"tenant_id": row.tenant_id, "error": exc.detail}},
                        )
                        failed.append((row.tenant_id, row.version))
                        continue
                    wrapped = crypto.wrap_key(
                        master_key, data_key, row.tenant_id, row.version, active
                    )
                    rewrapped += store.set_wrapped(session, row, wrapped, active, now)
            if len(rows) < batch_size:
                break
            after = (rows[-1].tenant_id, rows[-1].version)
        status = self.status()
        return RotationResult(
            master_version=active,
            previous_master_version=previous_master_version or active,
            rewrapped=rewrapped,
            failed=tuple(failed),
            pending_rewrap=status.pending_rewrap,
        )

    def status(self) -> VaultStatus:
        """Master key versions in the key file and data keys per master version."""
        self._keyring.reload()
        with self._db.read() as session:
            counts = store.count_by_master_version(session)
            clinics = store.count_tenants_with_keys(session)
        return VaultStatus(
            key_file=str(self._keyring.path),
            active_master_version=self._keyring.active_version,
            master_versions=self._keyring.versions,
            data_keys_by_master_version=counts,
            clinics_with_keys=clinics,
        )


def _committed(session: Session, row: store.StoredKey) -> bool:
    return (row.tenant_id, row.version) not in session.info.get(_CREATED, ())


def _plaintext(name: str, value: str | Secret) -> str:
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, str):
        return value
    raise TypeError(f"field {name!r}: expected str or Secret, got {type(value).__name__}")
