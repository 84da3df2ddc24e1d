"""A fake OAuth 2.0 authorization server (RFC 6749, PKCE RFC 7636), as Google's and
Microsoft identity platform's token endpoints behave.

* ``consent(authorization_url)``: what the practitioner's browser does: checks the
  client, the redirect URI and the S256 challenge, and answers the redirect URL with a
  ``code`` and the same ``state``.
* ``POST`` token endpoint, form-encoded: ``authorization_code`` (the verifier must hash
  to the challenge, the redirect URI must match) and ``refresh_token``. Errors are RFC
  6749 5.2 JSON: ``invalid_grant`` 400, ``invalid_client`` 401, ``invalid_request`` 400.
* ``rotate_refresh_tokens``: every refresh issues a new refresh token and revokes the
  one used (Microsoft does rotate; Google may): a second refresh with the same token
  then gets ``invalid_grant``, which is what a refresh race looks like.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import httpx


@dataclass
class Grant:
    scopes: list[str]
    challenge: str = ""
    redirect_uri: str = ""


@dataclass
class OAuthServer:
    client_id: str
    client_secret: str
    expires_in: int = 3600
    rotate_refresh_tokens: bool = False
    refresh_delay: float = 0.0  # seconds a refresh takes (to widen a race)
    codes: dict[str, Grant] = field(default_factory=dict)
    refresh_tokens: dict[str, list[str]] = field(default_factory=dict)  # token -> scopes
    access_tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry (epoch)
    refreshes: int = 0
    exchanges: int = 0
    failed_refreshes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- the browser side ------------------------------------------------------------

    def consent(self, authorization_url: str, *, grant: list[str] | None = None) -> str:
        query = {k: v[0] for k, v in parse_qs(urlsplit(authorization_url).query).items()}
        assert query.get("client_id") == self.client_id, "unknown client"
        assert query.get("response_type") == "code"
        assert query.get("code_challenge_method") == "S256"
        scopes = query.get("scope", "").split()
        code = secrets.token_urlsafe(24)
        with self._lock:
            self.codes[code] = Grant(
                grant if grant is not None else scopes,
                query["code_challenge"],
                query["redirect_uri"],
            )
        return f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}"

    def revoke_all(self) -> None:
        """The practitioner removed the app's access (or a password change did)."""
        with self._lock:
            self.refresh_tokens.clear()
            self.access_tokens.clear()

    def expire_access_tokens(self) -> None:
        with self._lock:
            for token in self.access_tokens:
                self.access_tokens[token] = 0.0

    def valid_access_token(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        with self._lock:
            expiry = self.access_tokens.get(token)
        return scheme == "Bearer" and expiry is not None and expiry > time.time()

    # -- the token endpoint ------------------------------------------------------------

    def token(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST":
            return _error(405, "invalid_request")
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return _error(400, "invalid_request")
        form = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        if (
            form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return _error(401, "invalid_client")
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return self._exchange(form)
        if grant_type == "refresh_token":
            return self._refresh(form)
        return _error(400, "unsupported_grant_type")

    def _exchange(self, form: dict[str, str]) -> httpx.Response:
        with self._lock:
            grant = self.codes.pop(form.get("code", ""), None)  # single use
        if grant is None or form.get("redirect_uri") != grant.redirect_uri:
            return _error(400, "invalid_grant")
        verifier = form.get("code_verifier", "")
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        if digest.rstrip(b"=").decode() != grant.challenge:
            return _error(400, "invalid_grant")
        with self._lock:
            self.exchanges += 1
            refresh = secrets.token_urlsafe(32)
            self.refresh_tokens[refresh] = grant.scopes
            return self._issue(grant.scopes, refresh)

    def _refresh(self, form: dict[str, str]) -> httpx.Response:
        if self.refresh_delay:
            time.sleep(self.refresh_delay)
        with self._lock:
            used = form.get("refresh_token", "")
            scopes = self.refresh_tokens.get(used)
            if scopes is None:
                self.failed_refreshes += 1
                return _error(400, "invalid_grant")
            self.refreshes += 1
            refresh = None
            if self.rotate_refresh_tokens:
                del self.refresh_tokens[used]
                refresh = secrets.token_urlsafe(32)
                self.refresh_tokens[refresh] = scopes
            return self._issue(scopes, refresh)

    def _issue(self, scopes: list[str], refresh: str | None) -> httpx.Response:
        access = secrets.token_urlsafe(32)
        self.access_tokens[access] = time.time() + self.expires_in
        body: dict[str, object] = {
            "access_token": access,
            "expires_in": self.expires_in,
            "scope": " ".join(scopes),
            "token_type": "Bearer",
        }
        if refresh is not None:
            body["refresh_token"] = refresh
        return httpx.Response(200, json=body, headers={"Cache-Control": "no-store"})


def _error(status: int, code: str) -> httpx.Response:
    return httpx.Response(
        status,
        json={"error": code, "error_description": f"fake authorization server: {code}"},
        headers={"Cache-Control": "no-store"},
    )
