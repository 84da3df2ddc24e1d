"""Per-clinic encrypted credentials: AES-256-GCM envelope encryption, key ring, rotation."""
