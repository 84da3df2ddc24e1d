"""Keys for one purpose each, derived from the master key.

HKDF-SHA256 with the purpose as ``info`` (e.g. ``b"clinicbridge receipt links v1"``):
keys of different purposes are independent, so a token signed for one kind of link is
never good for another, nothing is stored, and rotating the master key changes them all.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32


def derive(master_key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(
        master_key
    )
