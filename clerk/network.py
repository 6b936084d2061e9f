"""Which addresses the fetcher may connect to: public ones, and those the operator allows.

A city's index page is written by someone else, and a link or a redirect can point
anywhere: at 127.0.0.1, at the cloud metadata service on 169.254.169.254, at the database
port, at a printer on 10.0.0.7. So every connection clerk makes for a site goes through
`guarded_session`, whose connections resolve the host name, check every address it
resolves to, and connect to exactly the address they checked (a DNS answer that changes
between a check and the connect cannot slip a private address in). Redirects are new
connections, so each hop is checked too.

Refused by default: everything that is not a global unicast address (loopback,
link-local, private, shared/CGNAT, multicast, reserved, unspecified), IPv4-mapped IPv6
forms included. `ALLOW_PRIVATE_HOSTS` lists what an operator allows anyway (an intranet
site, or tests on 127.0.0.1): addresses, networks, or an address with a port
(`127.0.0.1,10.0.0.0/8,[::1]:8080,127.0.0.1:8123`).
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection as urllib3_connection

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SETTING = "ALLOW_PRIVATE_HOSTS"


class BlockedAddress(Exception):
    """A connection refused because its address is not public and not allowed.

    Deliberately not an OSError: urllib3 and requests would wrap that as a connection
    error worth retrying, and this answer does not change on a retry.
    """

    def __init__(self, host: str, address: str, port: int, reason: str) -> None:
        self.host, self.address, self.port, self.reason = host, address, port, reason
        shown = host if host == address else f"{host} ({address})"
        super().__init__(f"refused to connect to {shown} port {port}: {reason} address "
                         f"(only public addresses are fetched; {SETTING} allows others)")


def _unmapped(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _kind(address: Address) -> str | None:
    """Why an address is not public, or None if it is."""
    for name, flag in (("unspecified", address.is_unspecified),
                       ("loopback", address.is_loopback),
                       ("link-local", address.is_link_local),
                       ("multicast", address.is_multicast),
                       ("private", address.is_private),
                       ("reserved", address.is_reserved)):
        if flag:
            return name
    return None if address.is_global else "non-public"


@dataclass(frozen=True)
class AddressPolicy:
    """Public addresses, plus `allowed` (a network, with a port or with any port)."""

    allowed: tuple[tuple[Network, int | None], ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> AddressPolicy:
        """From `ALLOW_PRIVATE_HOSTS`: comma-separated addresses, networks, address:port."""
        entries = [item.strip() for item in (text or "").split(",") if item.strip()]
        return cls(tuple(_parse_entry(entry) for entry in entries))

    def allowing(self, entry: str) -> AddressPolicy:
        """This policy and one more entry (e.g. the demo's own server, `127.0.0.1:8123`)."""
        return AddressPolicy((*self.allowed, _parse_entry(entry)))

    def allowing_url(self, url: str) -> AddressPolicy:
        """This policy and exactly the address and port of `url` (an IP literal host)."""
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = parts.hostname or ""
        return self.allowing(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")

    def refusal(self, address: str, port: int) -> str | None:
        """Why clerk may not connect to `address`:`port`, or None if it may."""
        try:
            parsed = _unmapped(ipaddress.ip_address(address.split("%", 1)[0]))
        except ValueError:
            return "unparseable"
        for network, allowed_port in self.allowed:
            if parsed.version == network.version and parsed in network and (
                    allowed_port is None or allowed_port == port):
                return None
        return _kind(parsed)

    def check_url(self, url: str) -> None:
        """Raise BlockedAddress if `url`'s host is an IP literal clerk may not connect to.

        Host names are checked when they are resolved, at connect time; this is for
        refusing a literal before anything is attempted (a clearer, earlier error).
        """
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return
        port = parts.port or (443 if parts.scheme == "https" else 80)
        reason = self.refusal(host, port)
        if reason is not None:
            raise BlockedAddress(host, host, port, reason)


def _parse_entry(entry: str) -> tuple[Network, int | None]:
    text, port = entry, None
    if text.startswith("["):  # [v6] or [v6]:port
        inside, _, rest = text[1:].partition("]")
        text = inside
        if rest:
            port = _port(entry, rest.removeprefix(":"))
    elif text.count(":") == 1:  # v4:port (a bare IPv6 address has several colons)
        text, raw = text.split(":")
        port = _port(entry, raw)
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{SETTING}: {entry!r} is not an address, a network (10.0.0.0/8) "
                         "or an address with a port (127.0.0.1:8080)") from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen == 128:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            network = ipaddress.ip_network(mapped)
    return network, port


def _port(entry: str, raw: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{SETTING}: {entry!r} has an invalid port")
    return int(raw)


class _GuardedConnection(HTTPConnection):
    """Resolves, checks each address, and connects to exactly the address it checked."""

    policy: AddressPolicy = AddressPolicy()

    def _new_conn(self) -> socket.socket:
        host = self.host
        try:
            infos = socket.getaddrinfo(host.strip("[]"), self.port,
                                       urllib3_connection.allowed_gai_family(),
                                       socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise NameResolutionError(self.host, self, error) from error
        refused: BlockedAddress | None = None
        failure: Exception | None = None
        for _family, _type, _proto, _name, sockaddr in infos:
            address = str(sockaddr[0])
            reason = self.policy.refusal(address, self.port)
            if reason is not None:
                refused = refused or BlockedAddress(host, address, self.port, reason)
                continue
            try:
                sock = urllib3_connection.create_connection(
                    (address, self.port), self.timeout, source_address=self.source_address,
                    socket_options=self.socket_options)
            except TimeoutError as error:
                raise ConnectTimeoutError(
                    self, f"Connection to {host} timed out. (connect timeout={self.timeout})"
                ) from error
            except OSError as error:
                failure = NewConnectionError(
                    self, f"Failed to establish a new connection: {error}")
                continue
            sys.audit("http.client.connect", self, host, self.port)
            return sock
        if failure is not None:
            raise failure
        if refused is not None:
            raise refused
        raise NewConnectionError(self, f"{host} resolved to no address")


class _GuardedTlsConnection(_GuardedConnection, HTTPSConnection):
    pass


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, policy: AddressPolicy) -> None:
        plain = type("GuardedConnection", (_GuardedConnection,), {"policy": policy})
        tls = type("GuardedTlsConnection", (_GuardedTlsConnection,), {"policy": policy})
        self._pool_classes = {
            "http": type("GuardedPool", (HTTPConnectionPool,), {"ConnectionCls": plain}),
            "https": type("GuardedTlsPool", (HTTPSConnectionPool,), {"ConnectionCls": tls}),
        }
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes


def guarded_session(policy: AddressPolicy | None = None) -> requests.Session:
    """A requests Session whose every connection obeys `policy` (public addresses only
    by default). It ignores proxy variables: a proxy would connect on clerk's behalf,
    to an address this check never sees."""
    session = requests.Session()
    session.trust_env = False
    adapter = _GuardedAdapter(policy or AddressPolicy())
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


__all__ = ["SETTING", "AddressPolicy", "BlockedAddress", "guarded_session"]
