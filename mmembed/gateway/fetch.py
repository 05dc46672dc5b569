"""Fetching image URLs for callers, only where the operator allowed it, and never into private networks.

Off unless hosts are allow-listed. A URL (and every redirect) must name an allowed host and resolve only
to public addresses; the connection then goes to the address that was checked, so a DNS answer that
changes between check and connect cannot lead elsewhere. Size and time are capped; redirects are
followed by hand, a few at most, each checked like the first URL.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass

from mmembed.gateway.errors import ApiError

REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True, kw_only=True)
class FetchPolicy:
    # Hosts image URLs may name ("images.example.com", or "*.example.com" for its subdomains); empty: no
    # URL is fetched.
    allowed_hosts: tuple[str, ...] = ()
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 10.0  # for the whole fetch, redirects included
    max_redirects: int = 3
    # Networks reachable although not public (a private image store, or a test's loopback server).
    allowed_networks: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.allowed_hosts)


class FetchError(ValueError):
    """A URL that is not fetched, or failed to fetch; the message says why."""


def fetch(url: str, policy: FetchPolicy) -> bytes:
    """The body at URL under POLICY, or FetchError."""
    deadline = time.monotonic() + policy.timeout_s
    for _ in range(policy.max_redirects + 1):
        parts = urllib.parse.urlsplit(url)
        address = _checked_address(parts, policy)
        status, location, body = _get(parts, address, policy, deadline)
        if status in REDIRECTS and location:
            url = urllib.parse.urljoin(url, location)
            continue
        if status != 200:
            raise FetchError(f"{parts.hostname} answered HTTP {status}")
        return body
    raise FetchError(f"more than {policy.max_redirects} redirects")


def _checked_address(parts: urllib.parse.SplitResult, policy: FetchPolicy) -> str:
    """The address to connect to, after checking scheme, host and every address the host resolves to."""
    if parts.scheme not in ("http", "https"):
        raise FetchError(f"only http and https URLs are fetched, not {parts.scheme or 'this'}")
    host = (parts.hostname or "").lower()
    if not any(
        host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:])) for allowed in policy.allowed_hosts
    ):
        raise FetchError(f"host {host or '(none)'} is not in this server's allow-list")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as e:
        raise FetchError(f"cannot resolve {host}: {e}") from None
    networks = [ipaddress.ip_network(network) for network in policy.allowed_networks]
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    for address in addresses:
        if not address.is_global and not any(address in network for network in networks):
            raise FetchError(f"{host} resolves to {address}, a {_kind(address)} address, which is not fetched")
    return str(addresses[0])


def _matches(host: str, allowed: str) -> bool:
    """HOST is ALLOWED, or ALLOWED is "*.domain" and HOST a subdomain of it."""
    return host == allowed.lower() or (allowed.startswith("*.") and host.endswith(allowed[1:].lower()))


def _kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    for kind in ("loopback", "link_local", "private", "multicast", "reserved", "unspecified"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return "non-public"


def _get(
    parts: urllib.parse.SplitResult, address: str, policy: FetchPolicy, deadline: float
) -> tuple[int, str | None, bytes]:
    """GET the URL from ADDRESS: status, Location, and the body (empty for a redirect)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FetchError(f"timed out after {policy.timeout_s:g} s")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    connection = _PinnedConnection(parts.scheme, parts.hostname or "", address, port, remaining)
    try:
        path = parts.path or "/"
        connection.request("GET", f"{path}?{parts.query}" if parts.query else path, headers={"User-Agent": "mmembed"})
        response = connection.getresponse()
        if response.status in REDIRECTS:
            return response.status, response.getheader("Location"), b""
        declared = response.getheader("Content-Length", "")
        if declared.isdigit() and int(declared) > policy.max_bytes:
            raise FetchError(f"the image is {declared} bytes, over the limit of {policy.max_bytes}")
        body = bytearray()
        while chunk := response.read(64 * 1024):
            body += chunk
            if len(body) > policy.max_bytes:
                raise FetchError(f"the image is over the limit of {policy.max_bytes} bytes")
            if time.monotonic() > deadline:
                raise FetchError(f"timed out after {policy.timeout_s:g} s")
        return response.status, None, bytes(body)
    except TimeoutError:
        raise FetchError(f"timed out after {policy.timeout_s:g} s") from None
    except (OSError, http.client.HTTPException) as e:
        raise FetchError(f"cannot fetch from {parts.hostname}: {e}") from None
    finally:
        connection.close()


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to a checked ADDRESS, speaking to HOST (Host header, TLS name check)."""

    def __init__(self, scheme: str, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address, self._tls = address, scheme == "https"

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        if self._tls:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        self.sock = sock


def fetch_error(index: int, error: FetchError) -> ApiError:
    return ApiError(400, f"input[{index}]: image URL not fetched: {error}", param="input", code="url_not_fetched")
