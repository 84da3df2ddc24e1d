"""A fake web push service (what Mozilla's autopush or Google's FCM are to browsers),
served on 127.0.0.1, and the browser side of a subscription.

It checks every request the way a push service does: a VAPID ``Authorization``
(RFC 8292: ``vapid t=<ES256 JWT>, k=<public key>``, signature verified, ``aud`` the
endpoint's origin, ``exp`` within 24 hours) and ``TTL``; then, playing the browser, it
decrypts the RFC 8291 ``aes128gcm`` body with the subscription's private key. The
decryption is written here from the RFCs with ``cryptography``, independently of the
libraries the sender uses, so a test that reads a message proves the format.

Answers 201 with a ``Location``; endpoints can be made to answer 410 Gone (the
browser unsubscribed) or any status for the next requests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


@dataclass
class Browser:
    """The user agent's half of a subscription: its key pair and auth secret."""

    token: str
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    def decrypt(self, body: bytes) -> bytes:
        """RFC 8291 section 3 over RFC 8188 ``aes128gcm`` framing."""
        salt, record_size, id_len = body[:16], int.from_bytes(body[16:20], "big"), body[20]
        sender = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), body[21 : 21 + id_len]
        )
        content = body[21 + id_len :]
        shared = self.key.exchange(ec.ECDH(), sender)
        key_info = b"WebPush: info\x00" + _point(self.key.public_key()) + _point(sender)
        ikm = _hmac(_hmac(self.auth, shared), key_info + b"\x01")
        prk = _hmac(salt, ikm)
        cek = _hmac(prk, b"Content-Encoding: aes128gcm\x00\x01")[:16]
        nonce = _hmac(prk, b"Content-Encoding: nonce\x00\x01")[:12]
        plain = b""
        for seq, start in enumerate(range(0, len(content), record_size)):
            iv = (int.from_bytes(nonce, "big") ^ seq).to_bytes(12, "big")
            plain += AESGCM(cek).decrypt(iv, content[start : start + record_size], None)
        stripped = plain.rstrip(b"\x00")
        if not stripped.endswith(b"\x02"):
            raise ValueError("the last record does not end with the 0x02 delimiter")
        return stripped[:-1]


@dataclass(frozen=True)
class Received:
    token: str
    payload: dict[str, Any]
    headers: dict[str, str]
    vapid_claims: dict[str, Any]
    vapid_key: str


class VapidError(Exception):
    pass


def verify_vapid(header: str, origin: str) -> tuple[dict[str, Any], str]:
    """The JWT's claims and the ``k`` public key, if the RFC 8292 header is valid."""
    scheme, _, params = header.partition(" ")
    if scheme.lower() != "vapid":
        raise VapidError("scheme is not vapid")
    fields = dict(p.strip().split("=", 1) for p in params.split(",") if "=" in p)
    token, key_text = fields.get("t", ""), fields.get("k", "")
    try:
        head, claims_text, signature = token.split(".")
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _unb64(key_text))
        raw = _unb64(signature)
    except ValueError as exc:
        raise VapidError(f"malformed: {exc}") from None
    if json.loads(_unb64(head)).get("alg") != "ES256" or len(raw) != 64:
        raise VapidError("not an ES256 JWT")
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        public.verify(der, f"{head}.{claims_text}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise VapidError("bad signature") from None
    claims = json.loads(_unb64(claims_text))
    now = time.time()
    if claims.get("aud") != origin:
        raise VapidError("aud is not the endpoint's origin")
    if not now < float(claims.get("exp", 0)) <= now + 24 * 3600:
        raise VapidError("exp is not within the next 24 hours")
    if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
        raise VapidError("sub is not a mailto: or https: contact")
    return claims, key_text


class FakePushService:
    """Start with ``start()``; ``subscription()`` makes a browser and its JSON."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.rejected: list[tuple[str, str]] = []  # (token, why)
        self.browsers: dict[str, Browser] = {}
        self.gone: set[str] = set()
        self.next_statuses: list[int] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakePushService:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def subscription(self) -> dict[str, Any]:
        """What ``PushSubscription.toJSON()`` gives a page for a new browser."""
        browser = Browser(token=_b64(os.urandom(12)))
        with self._lock:
            self.browsers[browser.token] = browser
        return {
            "endpoint": f"{self.origin}/wpush/v2/{browser.token}",
            "expirationTime": None,
            "keys": {"p256dh": _b64(_point(browser.key.public_key())), "auth": _b64(browser.auth)},
        }

    def messages_for(self, endpoint: str) -> list[dict[str, Any]]:
        token = endpoint.rsplit("/", 1)[-1]
        with self._lock:
            return [r.payload for r in self.received if r.token == token]

    def _handle(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str]]:
        token = path.rsplit("/", 1)[-1]
        with self._lock:
            browser = self.browsers.get(token)
            forced = self.next_statuses.pop(0) if self.next_statuses else None
            if browser is None or token in self.gone:
                return 410, {}
        if forced is not None:
            return forced, {}
        try:
            claims, key = verify_vapid(headers.get("authorization", ""), self.origin)
            if "ttl" not in headers:
                raise VapidError("no TTL header")
            if headers.get("content-encoding") != "aes128gcm":
                raise VapidError("content-encoding is not aes128gcm")
            payload = json.loads(browser.decrypt(body))
        except (VapidError, ValueError) as exc:
            with self._lock:
                self.rejected.append((token, str(exc)))
            return (401 if isinstance(exc, VapidError) else 400), {}
        with self._lock:
            self.received.append(Received(token, payload, headers, claims, key))
            n = len(self.received)
        return 201, {"Location": f"{self.origin}/m/{n}"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, extra = service._handle(self.path, headers, body)
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
