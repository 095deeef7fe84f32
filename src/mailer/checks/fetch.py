"""Fetching a link for ``mailer check --online``: the public internet only, within limits.

A link in an issue is written by whoever edits it, and ``mailer check`` runs on the
machine that holds the subscriber database, often beside other services. So before any
connection the host is resolved and every address it has is vetted: loopback, private,
link-local, shared (100.64.0.0/10), multicast, reserved and cloud metadata addresses
(169.254.169.254, fd00:ec2::254) are refused, including IPv4 addresses inside IPv6 ones
(::ffff:127.0.0.1, 6to4, Teredo, NAT64). The connection goes to the address that was
vetted, never to a second lookup of the name, and each redirect's host is vetted again.

Each URL, with its redirects, has a budget: a total time (a server that drips one byte a
second does not hold the check) and a number of bytes read.

Resolving names and opening sockets are the far side of the network: :class:`Network`
holds both, and tests pass their own to reach a local server under a public name.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urljoin

import httpcore

Resolver = Callable[[str, int], list[str]]
Connector = Callable[[str, int, float], socket.socket]

REDIRECTS = (301, 302, 303, 307, 308)
_METADATA = {
    ipaddress.ip_address("169.254.169.254"): "a cloud metadata address",
    ipaddress.ip_address("fd00:ec2::254"): "a cloud metadata address",
    ipaddress.ip_address("100.100.100.200"): "a cloud metadata address",
}
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def system_resolve(host: str, port: int) -> list[str]:
    """Every address of ``host``, as the system's resolver gives them."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


def system_connect(address: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to the address itself (no name is looked up here)."""
    return socket.create_connection((address, port), timeout)


@dataclass(frozen=True)
class Network:
    """How names are resolved and connections opened: the system's, unless a test says."""

    resolve: Resolver = system_resolve
    connect: Connector = system_connect


@dataclass(frozen=True)
class FetchLimits:
    """What fetching one URL, redirects included, may cost."""

    seconds: float = 30.0  # in all, from the first lookup to the last header
    each: float = 15.0  # for one connection, or one read or write
    bytes: int = 1024 * 1024
    redirects: int = 5


@dataclass(frozen=True)
class Fetched:
    url: str
    status: int | None
    final: str
    redirected: bool
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and self.status < 400


def refusal(address: str) -> str | None:
    """Why ``address`` is not on the public internet (``"a private address"``); None if it is."""
    ip = ipaddress.ip_address(address.partition("%")[0])
    if ip in _METADATA:
        return _METADATA[ip]
    if isinstance(ip, ipaddress.IPv6Address):
        inner: ipaddress.IPv4Address | None = ip.ipv4_mapped or ip.sixtofour
        if inner is None and ip.teredo is not None:
            inner = ip.teredo[1]
        if inner is None and ip in _NAT64:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None:
            why = refusal(str(inner))
            if why is not None:
                return f"{why} inside an IPv6 address"
    kinds = (
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED, "a shared address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_reserved, "a reserved address"),
        (ip.is_private, "a private address"),
        (not ip.is_global, "not a public address"),
    )
    return next((why for found, why in kinds if found), None)


class NotPublic(Exception):
    """The host of a link is not on the public internet: nothing was sent to it."""


@dataclass
class _Budget:
    deadline: float
    bytes: int
    read: int = 0
    clock: Callable[[], float] = field(default=time.monotonic)

    def left(self, timeout: float | None) -> float:
        remaining = self.deadline - self.clock()
        if remaining <= 0:
            raise httpcore.ReadTimeout("out of time")
        return remaining if timeout is None else min(timeout, remaining)


class _Stream(httpcore.NetworkStream):
    """A socket whose reads and writes share the URL's budget of time and bytes."""

    def __init__(self, sock: socket.socket, budget: _Budget) -> None:
        self.sock, self.budget = sock, budget

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self.sock.settimeout(self.budget.left(timeout))
        try:
            data = self.sock.recv(max_bytes)
        except TimeoutError:
            raise httpcore.ReadTimeout("no answer") from None
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from None
        self.budget.read += len(data)
        if self.budget.read > self.budget.bytes:
            raise httpcore.ReadError("too much")
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.sock.settimeout(self.budget.left(timeout))
        try:
            self.sock.sendall(buffer)
        except TimeoutError:
            raise httpcore.WriteTimeout("no answer") from None
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from None

    def close(self) -> None:
        self.sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        self.sock.settimeout(self.budget.left(timeout))
        try:
            tls = ssl_context.wrap_socket(self.sock, server_hostname=server_hostname)
        except TimeoutError:
            self.sock.close()
            raise httpcore.ConnectTimeout("no TLS handshake") from None
        except OSError as exc:
            self.sock.close()
            raise httpcore.ConnectError(str(exc)) from None
        return _Stream(tls, self.budget)

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "ssl_object" and isinstance(self.sock, ssl.SSLSocket):
            return self.sock  # answers selected_alpn_protocol() as the SSL object does
        if info == "server_addr":
            return self.sock.getpeername()
        if info == "socket":
            return self.sock
        return None


class _PublicOnly(httpcore.NetworkBackend):
    """Resolve, vet every address, connect to a vetted one: never to a name."""

    def __init__(self, network: Network, budget: _Budget) -> None:
        self.network, self.budget = network, budget

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        name = host.strip("[]")
        try:
            ipaddress.ip_address(name.partition("%")[0])
            addresses = [name]
        except ValueError:
            try:
                addresses = self.network.resolve(name, port)
            except OSError as exc:
                raise httpcore.ConnectError(f"cannot find {name}: {exc}") from None
        if not addresses:
            raise httpcore.ConnectError(f"cannot find {name}")
        for address in addresses:
            why = refusal(address)
            if why is not None:
                shown = name if name == address else f"{name} is {address},"
                raise NotPublic(f"{shown} {why}")
        try:
            sock = self.network.connect(addresses[0], port, self.budget.left(timeout))
        except TimeoutError:
            raise httpcore.ConnectTimeout("no connection") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Stream(sock, self.budget)


def _ssl_context() -> ssl.SSLContext:
    import httpx

    return httpx.create_ssl_context()


def _target(url: str) -> httpcore.URL:
    """``url`` as httpcore sends it: IDNA host, percent-encoded path. ValueError if it is
    not an http(s) URL with a host."""
    import httpx

    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError("not a web address")
    return httpcore.URL(
        scheme=parsed.raw_scheme, host=parsed.raw_host, port=parsed.port, target=parsed.raw_path
    )


def fetch(
    url: str,
    *,
    user_agent: str,
    network: Network | None = None,
    limits: FetchLimits | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Fetched:
    """GET ``url`` and its redirects by hand (so each hop can be reported), reading only the
    status and headers, from the public internet only."""
    limits = limits or FetchLimits()
    budget = _Budget(clock() + limits.seconds, limits.bytes, clock=clock)
    backend = _PublicOnly(network or Network(), budget)
    each = limits.each
    timeouts = {"connect": each, "read": each, "write": each, "pool": each}
    current, redirected = url, False
    try:
        with httpcore.ConnectionPool(
            ssl_context=_ssl_context(), network_backend=backend, max_connections=1
        ) as pool:
            for _ in range(limits.redirects + 1):
                # A GET, not a HEAD: many servers answer HEAD wrongly. The body is not read.
                with pool.stream(
                    "GET",
                    _target(current),
                    headers=[(b"User-Agent", user_agent.encode()), (b"Accept", b"*/*")],
                    extensions={"timeout": timeouts},
                ) as response:
                    status = response.status
                    location = dict((k.lower(), v) for k, v in response.headers).get(b"location")
                if status in REDIRECTS and location:
                    text = location.decode("latin-1")
                    current, redirected = urljoin(current, text), True
                    continue
                return Fetched(url, status, current, redirected)
        return Fetched(url, None, current, redirected, f"more than {limits.redirects} redirects")
    except NotPublic as exc:
        why = f"not fetched: {exc} (mailer check --online fetches only the public internet)"
        return Fetched(url, None, current, redirected, why)
    except ValueError as exc:
        return Fetched(url, None, current, redirected, f"{exc}: {current}")
    except httpcore.TimeoutException:
        if clock() >= budget.deadline:
            why = f"no answer within {limits.seconds:g} s in all"
        else:
            why = f"no answer within {each:g} s"
        return Fetched(url, None, current, redirected, why)
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
        if budget.read > budget.bytes:
            why = f"the answer's headers passed {limits.bytes // 1024} KB"
        else:
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return Fetched(url, None, current, redirected, why)
