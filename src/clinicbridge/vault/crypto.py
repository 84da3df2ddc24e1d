"""AES-256-GCM for credential fields and for wrapping data keys.

A sealed field is text: ``cb1:<data key version>:<base64url(nonce | ciphertext | tag)>``.
Its associated data binds it to (tenant, integration, field, data key version):
moved to another row, field or clinic it no longer decrypts. A wrapped data key
is ``nonce | ciphertext | tag`` bound the same way to (tenant, data key version,
master key version). Nonces are 96 random bits, fresh for every encryption.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from clinicbridge.core.errors import DecryptionError

FORMAT = "cb1"
KEY_BYTES = 32
NONCE_BYTES = 12
_TAG_BYTES = 16


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def _context(purpose: bytes, *parts: str) -> bytes:
    # Length-prefixed, so no choice of ids or field names can make two
    # different tuples produce the same associated data.
    out = [purpose]
    for part in parts:
        raw = part.encode()
        out.append(len(raw).to_bytes(4, "big"))
        out.append(raw)
    return b"".join(out)


@functools.lru_cache(maxsize=4096)  # the same few fields are sealed and opened again and again
def field_context(tenant_id: str, integration_id: str, field: str, key_version: int) -> bytes:
    """The associated data of one sealed field."""
    return _context(b"cb1/field", tenant_id, integration_id, field, str(key_version))


def seal_field(aead: AESGCM, key_version: int, context: bytes, plaintext: str) -> str:
    nonce = os.urandom(NONCE_BYTES)
    blob = nonce + aead.encrypt(nonce, plaintext.encode(), context)
    return f"{FORMAT}:{key_version}:{base64.urlsafe_b64encode(blob).rstrip(b'=').decode()}"


def parse_sealed(sealed: str) -> tuple[int, bytes]:
    """The data key version and the binary blob of a sealed field; DecryptionError if malformed."""
    parts = sealed.split(":") if isinstance(sealed, str) else ()
    if len(parts) != 3 or parts[0] != FORMAT or not _is_version(parts[1]):
        raise DecryptionError("value is not a sealed vault credential")
    body = parts[2].replace("-", "+").replace("_", "/")  # the fastest way to base64url here
    try:
        blob = binascii.a2b_base64(body + "=" * (-len(body) % 4), strict_mode=True)
    except (binascii.Error, ValueError):
        raise DecryptionError("value is not a sealed vault credential") from None
    if len(blob) < NONCE_BYTES + _TAG_BYTES:
        raise DecryptionError("value is not a sealed vault credential")
    return int(parts[1]), blob


def _is_version(text: str) -> bool:
    return text.isascii() and text.isdigit() and text[0] != "0" and len(text) <= 9


def open_field(aead: AESGCM, blob: bytes, context: bytes) -> str:
    """The plaintext; DecryptionError (naming nothing secret) if the tag does not verify."""
    try:
        raw = aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context)
    except InvalidTag:
        raise DecryptionError(
            "credential does not decrypt here: tampered, or copied from another "
            "field, integration or clinic"
        ) from None
    return raw.decode()


def _key_context(tenant_id: str, key_version: int, master_version: int) -> bytes:
    return _context(b"cb1/data-key", tenant_id, str(key_version), str(master_version))


def wrap_key(
    master_key: bytes, data_key: bytes, tenant_id: str, key_version: int, master_version: int
) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    context = _key_context(tenant_id, key_version, master_version)
    return nonce + AESGCM(master_key).encrypt(nonce, data_key, context)


def unwrap_key(
    master_key: bytes, wrapped: bytes, tenant_id: str, key_version: int, master_version: int
) -> bytes:
    context = _key_context(tenant_id, key_version, master_version)
    try:
        key = AESGCM(master_key).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], context)
    except (InvalidTag, ValueError):
        raise DecryptionError(
            f"data key {key_version} of {tenant_id} does not unwrap with master key "
            f"version {master_version}: wrong key file?"
        ) from None
    if len(key) != KEY_BYTES:
        raise DecryptionError(f"data key {key_version} of {tenant_id} is not a 256-bit key")
    return key
