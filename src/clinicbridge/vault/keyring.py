"""The master key ring: versioned 256-bit keys in one private file.

File format, one key per line (``#`` comments and blank lines ignored)::

    v1:<base64 of 32 bytes>
    v2:<base64 of 32 bytes>

The highest version is active: it wraps new data keys; the older ones stay to
unwrap data keys not yet re-wrapped (and those in database backups). A file
holding one bare base64 key (the first release's format) is version 1.

Writers (first-run creation, ``add_version``) hold an exclusive ``flock`` on
the file's directory, write a 0600 temporary file, fsync it and ``os.replace``
it over the key file: readers never see a partial or world-readable file, and
two rotations cannot both write "version N+1".
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import os
import re
import secrets
import stat
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from clinicbridge.core.errors import VaultError
from clinicbridge.settings import ENV_PREFIX, MASTER_KEY_BYTES, SettingsError

_VARIABLE = f"{ENV_PREFIX}MASTER_KEY_FILE"
_LINE = re.compile(r"v([1-9][0-9]{0,8}):(\S+)")
_HEADER = (
    "# ClinicBridge master key ring: one v<N>:<base64 key> per line; the highest N is active.\n"
    "# Keep older versions while `clinicbridge vault status` or a backup still uses them.\n"
)


class KeyRing:
    """The master keys of one key file; re-reads the file when asked for an unknown version."""

    def __init__(self, path: Path, keys: Mapping[int, bytes]) -> None:
        if not keys:
            raise ValueError("a key ring holds at least one key")
        self.path = path
        self._keys = dict(keys)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path, *, create: bool = True) -> KeyRing:
        """Read the key file; create it (version 1, mode 0600) if missing and ``create``."""
        if not path.exists():
            if not create:
                raise SettingsError(f"{_VARIABLE}: {path} does not exist")
            with _directory_lock(path):
                if not path.exists():  # another process may have won the race
                    _write(path, {1: secrets.token_bytes(MASTER_KEY_BYTES)})
        return cls(path, _read(path))

    def __repr__(self) -> str:
        return f"KeyRing(path={str(self.path)!r}, versions={list(self.versions)})"

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(sorted(self._keys))

    @property
    def active_version(self) -> int:
        return max(self._keys)

    @property
    def active_key(self) -> bytes:
        return self.active()[1]

    def active(self) -> tuple[int, bytes]:
        """The active version and its key, read together."""
        keys = self._keys
        version = max(keys)
        return version, keys[version]

    def key(self, version: int) -> bytes:
        """The key of ``version``; re-reads the file once if it is unknown (rotated elsewhere)."""
        key = self._keys.get(version)
        if key is None:
            self.reload()
            key = self._keys.get(version)
        if key is None:
            raise VaultError(f"master key version {version} is not in {self.path}")
        return key

    def reload(self) -> None:
        """Re-read the key file (another process may have added a version)."""
        with self._lock:  # serialized, so a slow older read cannot undo a newer one
            self._keys = _read(self.path)

    def add_version(self) -> int:
        """Append a new random key as the active version; return its number."""
        with _directory_lock(self.path):
            keys = _read(self.path)  # the file, not our copy: it may be newer
            version = max(keys) + 1
            keys[version] = secrets.token_bytes(MASTER_KEY_BYTES)
            _write(self.path, keys)
            with self._lock:
                self._keys = keys
        return version


def _read(path: Path) -> dict[int, bytes]:
    try:
        with path.open("rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            if mode & (stat.S_IROTH | stat.S_IWOTH):
                raise SettingsError(
                    f"{_VARIABLE}: {path} is accessible by other users "
                    f"(mode {stat.filemode(mode)}); run: chmod 600 {path}"
                )
            raw = fh.read()
    except OSError as exc:
        raise SettingsError(f"{_VARIABLE}: cannot read {path}: {exc.strerror}") from None
    return _parse(raw, path)


def _parse(raw: bytes, path: Path) -> dict[int, bytes]:
    # Errors name the file and line, never the content: it is key material.
    bad = SettingsError(f"{_VARIABLE}: {path} does not hold a base64 {MASTER_KEY_BYTES}-byte key")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise bad from None
    lines = [
        (number, line.strip())
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.strip().startswith("#")
    ]
    if len(lines) == 1 and ":" not in lines[0][1]:  # the legacy single-key file
        return {1: _decode(lines[0][1], bad)}
    keys: dict[int, bytes] = {}
    for number, line in lines:
        match = _LINE.fullmatch(line)
        if match is None:
            raise SettingsError(
                f"{_VARIABLE}: {path} line {number} is not "
                f"v<N>:<base64 {MASTER_KEY_BYTES}-byte key>"
            )
        version = int(match[1])
        if version in keys:
            raise SettingsError(f"{_VARIABLE}: {path} lists version {version} twice")
        keys[version] = _decode(match[2], bad)
    if not keys:
        raise bad
    return keys


def _decode(value: str, bad: SettingsError) -> bytes:
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise bad from None
    if len(key) != MASTER_KEY_BYTES:
        raise bad
    return key


def _write(path: Path, keys: Mapping[int, bytes]) -> None:
    """Replace ``path`` atomically with ``keys``, keeping its owner and private mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = path.stat() if path.exists() else None
    body = _HEADER + "".join(
        f"v{version}:{base64.b64encode(keys[version]).decode()}\n" for version in sorted(keys)
    )
    try:
        _replace(path, previous, body)
    except OSError as exc:
        raise SettingsError(f"{_VARIABLE}: cannot write {path}: {exc.strerror}") from None
    _fsync_directory(path.parent)


def _replace(path: Path, previous: os.stat_result | None, body: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            if previous is not None:
                # Keep what the operator set up (e.g. 0640 for a service group),
                # never a world bit; root rotating keeps the service user's file.
                os.fchmod(fd, stat.S_IMODE(previous.st_mode) & 0o660)
                if (previous.st_uid, previous.st_gid) != (os.geteuid(), os.getegid()):
                    os.fchown(fd, previous.st_uid, previous.st_gid)
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_directory(directory: Path) -> None:
    # The rename must be durable before data keys are wrapped with the new key.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _directory_lock(path: Path) -> Iterator[None]:
    # The directory, not the key file: os.replace swaps the file's inode, and
    # a lock file could end up owned by a user the service cannot open it as.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
