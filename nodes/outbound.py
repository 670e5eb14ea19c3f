"""Outbound HTTP that cannot be turned against the host: every request (and every redirect)
resolves its host once, checks every address, and connects to a checked address itself.

Webhooks and the `http_get` tool both go through `fetch`. A name that resolves to a public
address when checked and to 127.0.0.1 a moment later (DNS rebinding) cannot reach 127.0.0.1:
the connection is opened to the address that was checked, never to the name again. The name
stays in the `Host` header and in TLS (SNI and the certificate check).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import httpx

DEFAULT_PORTS = frozenset({80, 443})
MAX_URL_CHARS = 2000

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""Resolves (host, port) to IP address strings, in the order they should be tried."""
AddressCheck = Callable[[str], str | None]
"""Why an IP address may not be reached (e.g. "loopback"), or None."""


class OutboundRefusedError(ValueError):
    """A request that will not be made; the message says why (it may be shown to clients)."""


async def resolve_system(host: str, port: int) -> list[str]:
    """The system resolver, off the event loop: every address of `host`, first answer first."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """Whether `host` is listed, exactly or under a `*.domain` entry."""
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower().rstrip(".")
        if entry.startswith("*.") and (host == entry[2:] or host.endswith(entry[1:])):
            return True
        if host == entry:
            return True
    return False


_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _ipv4_refused(ip: ipaddress.IPv4Address) -> str | None:
    checks = (
        (ip.is_unspecified or ip in ipaddress.IPv4Network("0.0.0.0/8"), "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip == ipaddress.IPv4Address("255.255.255.255"), "broadcast"),
        (ip.is_reserved, "reserved"),
        (ip in _CGNAT, "shared (CGNAT)"),
        (ip.is_private, "private"),
        (not ip.is_global, "non-global"),
    )
    return next((reason for refused, reason in checks if refused), None)


def _embedded(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address carries, with the name of the range that carries it."""
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _IPV4_TRANSLATED:
        return "IPv4-translated", low32
    if ip in _IPV4_COMPATIBLE:
        return "IPv4-compatible", low32
    if ip in _NAT64:
        return "NAT64", low32
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    return None


def _ipv6_refused(ip: ipaddress.IPv6Address) -> str | None:
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    embedded = _embedded(ip)
    if embedded is not None:
        kind, ipv4 = embedded
        reason = _ipv4_refused(ipv4)
        if reason is not None:
            return f"{kind} address embedding a {reason}"
        if kind == "IPv4-compatible":  # deprecated: nothing legitimate answers on these
            return "IPv4-compatible (deprecated)"
        return None
    checks = (
        (ip in _NAT64_LOCAL, "NAT64 local-use"),
        (ip.teredo is not None, "Teredo"),
        (ip.is_link_local, "link-local"),
        (ip.is_site_local, "site-local"),
        (ip.is_multicast, "multicast"),
        (ip.is_reserved, "reserved"),
        (ip.is_private, "private"),
        (not ip.is_global, "non-global"),
    )
    return next((reason for refused, reason in checks if refused), None)


def address_refused(address: str) -> str | None:
    """Why connecting to IP `address` is refused, or None for a public address.

    Refused: loopback, private, link-local (169.254.169.254, the cloud metadata address, is
    one), shared CGNAT space, multicast, broadcast, reserved, unspecified and other
    non-global ranges; site-local, Teredo and NAT64 local-use IPv6; and IPv6 addresses that
    carry a refused IPv4 address (IPv4-mapped, -translated and -compatible, 6to4, NAT64).
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv4Address):
        return _ipv4_refused(ip)
    return _ipv6_refused(ip)


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """Where outbound requests may go.

    Attributes:
        allowed_hosts: None lets any host be asked for; a tuple allows only the hosts listed
            (exactly, or under a `*.domain` entry).
        trusted_hosts: hosts the operator vouches for: their addresses and ports are not
            checked (they may live on loopback or a private network).
        ports: the ports other hosts may be reached on.
        resolver: how names are resolved (the system resolver; tests inject one).
        check_address: why an address is refused (`address_refused`; tests may inject one).
        trust_hint: added to refusals of addresses, saying how to allow a host.
    """

    allowed_hosts: tuple[str, ...] | None = None
    trusted_hosts: tuple[str, ...] = ()
    ports: frozenset[int] = DEFAULT_PORTS
    resolver: Resolver = resolve_system
    check_address: AddressCheck = address_refused
    trust_hint: str = ""


@dataclass(frozen=True, slots=True)
class Target:
    """A URL that passed the checks that need no DNS."""

    url: httpx.URL
    host: str  # as the lists and the resolver see it: lower case, IDNA (ASCII)
    port: int
    trusted: bool

    @property
    def is_ip(self) -> bool:
        """Whether the URL names an IP address rather than a host name."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def check_target(url: str | httpx.URL, policy: OutboundPolicy) -> Target:
    """Check what can be checked without DNS: http(s), a host, no credentials, the host
    allowed by `policy`, and its port (unless the host is trusted).

    Raises:
        OutboundRefusedError: naming what is wrong with the URL.
    """
    if isinstance(url, str):
        if not url:
            raise OutboundRefusedError("the URL is empty")
        if len(url) > MAX_URL_CHARS:
            raise OutboundRefusedError(f"the URL is longer than {MAX_URL_CHARS} characters")
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError) as error:
            raise OutboundRefusedError(f"the URL {url!r} is malformed: {error}") from error
    else:
        parsed = url
    if parsed.scheme not in {"http", "https"}:
        raise OutboundRefusedError(
            f"the URL must be http or https, not {parsed.scheme or 'relative'!r}"
        )
    if not parsed.host:
        raise OutboundRefusedError(f"the URL {str(parsed)!r} has no host")
    if parsed.userinfo:
        raise OutboundRefusedError("URLs with credentials are refused")
    try:
        host = parsed.raw_host.decode("ascii").lower().rstrip(".")
    except UnicodeDecodeError as error:  # httpx encodes names as IDNA: never here
        raise OutboundRefusedError(f"the host of {str(parsed)!r} is not ASCII") from error
    names = {host, parsed.host.lower().rstrip(".")}
    if policy.allowed_hosts is not None and not any(
        host_allowed(name, policy.allowed_hosts) for name in names
    ):
        raise OutboundRefusedError(f"host {parsed.host!r} is not on the allow-list of this server")
    trusted = any(host_allowed(name, policy.trusted_hosts) for name in names)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if not trusted and port not in policy.ports:
        allowed = ", ".join(str(p) for p in sorted(policy.ports)) or "none"
        raise OutboundRefusedError(f"port {port} is not allowed (allowed ports: {allowed})")
    return Target(url=parsed, host=host, port=port, trusted=trusted)


async def resolve_checked(target: Target, policy: OutboundPolicy) -> list[str]:
    """Resolve the target's host once and check every address it resolves to; returns the
    addresses to connect to (empty for a trusted host, which is reached by its name).

    Raises:
        OutboundRefusedError: the host does not resolve, or one of its addresses is refused.
    """
    if target.trusted:
        return []
    try:
        addresses = list(await policy.resolver(target.host, target.port))
    except (OSError, UnicodeError) as error:
        why = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise OutboundRefusedError(f"cannot resolve host {target.host!r}: {why}") from error
    if not addresses:
        raise OutboundRefusedError(f"host {target.host!r} resolves to no address")
    for address in addresses:
        try:
            reason = policy.check_address(address)
        except ValueError:
            reason = "malformed"
        if reason is not None:
            raise OutboundRefusedError(
                f"host {target.host!r} resolves to a {reason} address ({address}); only "
                f"public addresses are reached{policy.trust_hint}"
            )
    return addresses


async def check_url(url: str, policy: OutboundPolicy) -> Target:
    """Check `url` as a request to it would be checked (shape, lists, port, DNS, addresses).

    Raises:
        OutboundRefusedError: naming what is refused.
    """
    target = check_target(url, policy)
    await resolve_checked(target, policy)
    return target


class PinnedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that checks every request it sends (redirects included) against a
    policy and connects to a checked address, keeping the name in `Host` and in TLS."""

    def __init__(self, policy: OutboundPolicy, *, verify: ssl.SSLContext | bool = True) -> None:
        self._policy = policy
        self._inner = httpx.AsyncHTTPTransport(verify=verify, trust_env=False, retries=0)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` to the first checked address that accepts a connection."""
        target = check_target(request.url, self._policy)
        addresses = await resolve_checked(target, self._policy)
        if not addresses:  # a trusted host: reached by its name
            return await self._inner.handle_async_request(request)
        extensions = dict(request.extensions)
        if target.url.scheme == "https" and not target.is_ip:
            extensions["sni_hostname"] = target.host  # TLS checks the certificate for it
        failure: httpx.TransportError | None = None
        for address in addresses:
            pinned = httpx.Request(
                request.method,
                request.url.copy_with(host=address),
                headers=request.headers,  # `Host` keeps the name
                stream=request.stream,
                extensions=extensions,
            )
            try:
                return await self._inner.handle_async_request(pinned)
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                failure = error  # nothing was sent: the next checked address may answer
        assert failure is not None
        raise failure

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._inner.aclose()


@dataclass(frozen=True, slots=True)
class OutboundResponse:
    """What came back: the status, the headers, and at most `max_bytes` of the body."""

    status: int
    headers: httpx.Headers
    body: bytes
    truncated: bool
    url: str
    encoding: str | None

    def text(self) -> str:
        """The body decoded with the response's charset (utf-8 by default)."""
        return self.body.decode(self.encoding or "utf-8", errors="replace")


_DECODERS: dict[str, int] = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def _read_body(response: httpx.Response, max_bytes: int) -> tuple[bytes, bool]:
    """At most `max_bytes` of the decoded body, decompressing no more than that."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    decoder = None
    if encoding in _DECODERS:
        decoder = zlib.decompressobj(_DECODERS[encoding])
    elif encoding not in {"identity", ""}:
        raise OutboundRefusedError(f"the response is compressed with {encoding!r}, not decoded")
    body = bytearray()
    async for chunk in response.aiter_raw():
        room = max_bytes - len(body)
        if decoder is not None:
            try:
                data = decoder.decompress(chunk, room + 1)
            except zlib.error as error:
                raise OutboundRefusedError(f"the {encoding} response is corrupt") from error
        else:
            data = chunk
        body.extend(data[: room + 1])
        if len(body) > max_bytes:
            return bytes(body[:max_bytes]), True
    if decoder is not None:
        body.extend(decoder.flush()[: max_bytes - len(body) + 1])
    return bytes(body[:max_bytes]), len(body) > max_bytes


async def fetch(
    method: Literal["GET", "POST"],
    url: str,
    *,
    policy: OutboundPolicy,
    timeout_s: float,
    max_bytes: int,
    max_redirects: int = 0,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
) -> OutboundResponse:
    """Make one request under `policy`: the whole exchange (resolution, connection, redirects,
    body) within `timeout_s`, at most `max_bytes` of the body read, and at most
    `max_redirects` redirects followed, each checked like the first request.

    Raises:
        OutboundRefusedError: the URL, a redirect target or an address is refused.
        TimeoutError: no complete answer within `timeout_s`.
        httpx.HTTPError: the request failed (connection refused, TLS, too many redirects...).
    """
    target = check_target(url, policy)
    try:
        return await _exchange(
            method, target, policy=policy, timeout_s=timeout_s, max_bytes=max_bytes,
            max_redirects=max_redirects, content=content, headers=headers, verify=verify,
        )  # fmt: skip
    except httpx.TimeoutException as error:  # one step's timeout: the same bound was hit
        raise TimeoutError(f"no complete answer within {timeout_s} s") from error


async def _exchange(
    method: str,
    target: Target,
    *,
    policy: OutboundPolicy,
    timeout_s: float,
    max_bytes: int,
    max_redirects: int,
    content: bytes | None,
    headers: Mapping[str, str] | None,
    verify: ssl.SSLContext | bool,
) -> OutboundResponse:
    sent = {"Accept-Encoding": "gzip, deflate", **(headers or {})}
    async with (
        asyncio.timeout(timeout_s),
        httpx.AsyncClient(
            transport=PinnedTransport(policy, verify=verify),
            timeout=timeout_s,
            follow_redirects=max_redirects > 0,
            max_redirects=max_redirects,
            trust_env=False,  # a proxy from the environment would bypass the pinning
        ) as client,
        client.stream(method, target.url, content=content, headers=sent) as response,
    ):
        body, truncated = (b"", False) if max_bytes <= 0 else await _read_body(response, max_bytes)
        return OutboundResponse(
            status=response.status_code,
            headers=response.headers,
            body=body,
            truncated=truncated,
            url=str(response.url),
            encoding=response.charset_encoding,
        )
