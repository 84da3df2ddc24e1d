"""SSRF protection for outbound webhooks: clinics choose the URL, we choose where it may go.

Three checks, so that a URL cannot reach the inside of our network:

1. shape: ``https`` only (``http`` for allow-listed hosts), no user info;
2. resolution: every address the host resolves to must be public;
3. connection: the address actually connected to is checked again, after the TCP
   connect and before a byte is sent (``GuardedTransport``), which defeats DNS
   rebinding between check 2 and the connection.

"Public" excludes loopback, link-local (cloud metadata 169.254.169.254 included),
private, shared (CGNAT), reserved, multicast and unspecified addresses, in IPv4,
IPv6 and IPv4-mapped IPv6. ``CLINICBRIDGE_WEBHOOK_ALLOWLIST`` names hosts and CIDRs
an operator allows anyway (a clinic's on-premises system, tests).

Messages never echo the URL or the addresses (they may describe our network).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import httpx

from clinicbridge.core.errors import ClinicBridgeError
from clinicbridge.settings import IPNetwork, parse_allowlist

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
# Named explicitly although covered by link-local / private: the addresses that matter most.
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)


class ForbiddenDestinationError(ClinicBridgeError):
    """The URL may not be called: wrong scheme, or a non-public address. Retrying cannot help."""

    status = 422
    type_slug = "forbidden-destination"
    title = "Forbidden webhook destination"
    retryable = False


class UnresolvableHostError(ClinicBridgeError):
    """DNS gave no answer; may be transient, so a delivery retries."""

    status = 422
    type_slug = "unresolvable-host"
    title = "Webhook host does not resolve"


@dataclass(frozen=True)
class AllowList:
    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str) -> AllowList:
        return _parse_cached(text)

    def allows_host(self, host: str) -> bool:
        return _normal_host(host) in self.hosts

    def allows_address(self, address: Address) -> bool:
        address = _plain(address)
        return any(address in network for network in self.networks)


@lru_cache(maxsize=16)
def _parse_cached(text: str) -> AllowList:
    hosts, networks = parse_allowlist(text)
    return AllowList(hosts, networks)


def _normal_host(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


def _plain(address: Address) -> Address:
    """``::ffff:127.0.0.1`` is 127.0.0.1."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_forbidden(address: Address) -> bool:
    """True for every address that is not plainly public."""
    address = _plain(address)
    return (
        address in METADATA_ADDRESSES
        or address.is_loopback
        or address.is_link_local
        or address.is_private
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
        or not address.is_global  # shared 100.64/10, documentation ranges, ...
    )


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return None


def check_shape(url: str, allow: AllowList) -> httpx.URL:
    """The parsed URL if its scheme and form are acceptable."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise ForbiddenDestinationError("must be an absolute https:// URL") from None
    if parsed.scheme not in ("https", "http") or not parsed.host:
        raise ForbiddenDestinationError("must be an absolute https:// URL")
    if parsed.userinfo:
        raise ForbiddenDestinationError("must not contain a user name or password")
    if parsed.scheme == "http" and not _allowed_by_name_or_network(parsed.host, allow):
        raise ForbiddenDestinationError("must use https (http only for allow-listed hosts)")
    return parsed


def _allowed_by_name_or_network(host: str, allow: AllowList) -> bool:
    if allow.allows_host(host):
        return True
    literal = _address(_normal_host(host))
    return literal is not None and allow.allows_address(literal)


def check_url(url: str, allow: AllowList, resolve: Resolver = system_resolver) -> None:
    """Raise ForbiddenDestinationError (or UnresolvableHostError) unless ``url`` may be called."""
    parsed = check_shape(url, allow)
    host = _normal_host(parsed.host)
    if allow.allows_host(host):
        return
    literal = _address(host)
    if literal is not None:
        addresses = [literal]
    else:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            found = resolve(host, port)
        except (OSError, UnicodeError):
            raise UnresolvableHostError("the host name does not resolve") from None
        addresses = [a for a in map(_address, found) if a is not None]
        if not addresses:
            raise UnresolvableHostError("the host name does not resolve")
    for address in addresses:
        if is_forbidden(address) and not allow.allows_address(address):
            raise ForbiddenDestinationError(
                "resolves to a loopback, private, link-local or reserved address"
            )


class GuardedTransport(httpx.BaseTransport):
    """An httpx transport that refuses a forbidden peer right after connecting.

    Uses httpcore's ``trace`` extension: ``connection.connect_tcp.complete`` hands
    us the new socket before the request is written. A refused socket is closed and
    ForbiddenDestinationError propagates (the client does not retry it).
    """

    def __init__(self, allow: AllowList, inner: httpx.BaseTransport | None = None) -> None:
        self._allow = allow
        self._inner = inner or httpx.HTTPTransport(retries=0)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not self._allow.allows_host(request.url.host):
            request.extensions["trace"] = self._check_peer
        return self._inner.handle_request(request)

    def _check_peer(self, event: str, info: dict[str, Any]) -> None:
        if event != "connection.connect_tcp.complete":
            return
        stream = info.get("return_value")
        peer = stream.get_extra_info("server_addr") if stream is not None else None
        address = _address(str(peer[0])) if isinstance(peer, tuple) and peer else None
        if address is None or (is_forbidden(address) and not self._allow.allows_address(address)):
            if stream is not None:
                stream.close()
            raise ForbiddenDestinationError(
                "connected to a loopback, private, link-local or reserved address"
            )

    def close(self) -> None:
        self._inner.close()
