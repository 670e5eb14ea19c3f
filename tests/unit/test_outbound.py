"""Outbound HTTP: every address checked, the connection pinned to a checked address (DNS
rebinding fails), Host and TLS kept for the name, redirects re-checked, ports, size and time
bounded. Real servers on 127.0.0.1 and 127.0.0.2; 127.0.0.2 stands in for a public address
where a test says so (the resolver and the address check are injected, nothing else)."""

from __future__ import annotations

import gzip
import ssl
import time
from collections.abc import Sequence

import httpx
import pytest
import trustme

from nodes.outbound import (
    OutboundPolicy,
    OutboundRefusedError,
    address_refused,
    check_target,
    check_url,
    fetch,
)
from tests.unit.local_http import LocalServer, Reply, Seen, serving, twin_servers

PUBLIC = "93.184.215.14"  # a global unicast address; no test connects to it


class Resolver:
    """Answers with the next of `answers` on every call, recording what it was asked."""

    def __init__(self, *answers: Sequence[str]) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        return list(self.answers.pop(0))


def public_stand_in(address: str) -> str | None:
    """The real check, except that 127.0.0.2 counts as a public address."""
    return None if address == "127.0.0.2" else address_refused(address)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("10.0.0.8", "private"),
        ("172.16.0.5", "private"),
        ("192.168.1.20", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("198.51.100.7", "private"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "private"),
        ("::ffff:127.0.0.1", "IPv4-mapped address embedding a loopback"),
        ("::ffff:169.254.169.254", "IPv4-mapped address embedding a link-local"),
        ("::ffff:0:7f00:1", "IPv4-translated address embedding a loopback"),
        ("::10.0.0.1", "IPv4-compatible address embedding a private"),
        ("::8.8.8.8", "IPv4-compatible (deprecated)"),
        ("2002:7f00:1::1", "6to4 address embedding a loopback"),
        ("2002:a9fe:a9fe::", "6to4 address embedding a link-local"),
        ("2002:c0a8:0101::1", "6to4 address embedding a private"),
        ("64:ff9b::7f00:1", "NAT64 address embedding a loopback"),
        ("64:ff9b::a9fe:a9fe", "NAT64 address embedding a link-local"),
        ("64:ff9b:1::a00:1", "NAT64 local-use"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
        ("8.8.8.8", None),
        ("2001:4860:4860::8888", None),
        ("::ffff:8.8.8.8", None),
        ("2002:808:808::1", None),
        ("64:ff9b::808:808", None),
    ],
)
def test_addresses_that_reach_the_host_or_its_network_are_refused(
    address: str, reason: str | None
) -> None:
    assert address_refused(address) == reason


@pytest.mark.parametrize(
    ("url", "policy", "reason"),
    [
        ("ftp://example.com/", OutboundPolicy(), "http or https"),
        ("/relative", OutboundPolicy(), "http or https"),
        ("http://user:pw@example.com/", OutboundPolicy(), "credentials"),
        ("http://example.com:8080/", OutboundPolicy(), "port 8080 is not allowed"),
        ("https://example.org/", OutboundPolicy(allowed_hosts=("example.com",)), "allow-list"),
        ("https://a.example.org/", OutboundPolicy(allowed_hosts=("*.example.com",)), "allow"),
        ("http://" + "a" * 2000 + ".com/", OutboundPolicy(), "longer than 2000"),
    ],
)
def test_urls_are_refused_before_any_lookup(url: str, policy: OutboundPolicy, reason: str) -> None:
    with pytest.raises(OutboundRefusedError, match=reason):
        check_target(url, policy)


def test_trusted_hosts_may_use_any_port_and_listed_hosts_match_subdomains() -> None:
    trusted = OutboundPolicy(trusted_hosts=("hooks.internal",))
    assert check_target("http://hooks.internal:8123/x", trusted).trusted
    listed = OutboundPolicy(allowed_hosts=("*.example.com",))
    assert check_target("https://api.example.com/", listed).port == 443
    assert check_target("http://EXAMPLE.com./", listed).host == "example.com"


async def test_every_address_is_checked_not_only_the_first() -> None:
    resolver = Resolver([PUBLIC, "127.0.0.1"])
    policy = OutboundPolicy(resolver=resolver)
    with pytest.raises(OutboundRefusedError, match=r"loopback address \(127.0.0.1\)"):
        await check_url("http://rebind.example/", policy)
    with pytest.raises(OutboundRefusedError, match="resolves to no address"):
        await check_url("http://empty.example/", OutboundPolicy(resolver=Resolver([])))


async def test_connection_goes_to_the_checked_address_when_dns_rebinds() -> None:
    # "localhost" resolves to 127.0.0.1 through the system: a client that connected by name
    # after the check would reach the loopback twin. The injected resolver answers the
    # stand-in public address first and loopback second.
    other, loopback = twin_servers()
    resolver = Resolver(["127.0.0.2"], ["127.0.0.1"])
    policy = OutboundPolicy(
        resolver=resolver, check_address=public_stand_in, ports=frozenset({other.port})
    )
    url = f"http://localhost:{other.port}/page?q=1"
    with serving(other, loopback):
        first = await fetch("GET", url, policy=policy, timeout_s=10, max_bytes=1000)
        assert first.status == 200
        assert first.text() == "hello from the local server"
        with pytest.raises(OutboundRefusedError, match="loopback"):
            await fetch("GET", url, policy=policy, timeout_s=10, max_bytes=1000)
    assert resolver.asked == [("localhost", other.port)] * 2  # once per request
    assert [(s.path, s.headers["host"]) for s in other.seen] == [
        ("/page?q=1", f"localhost:{other.port}")
    ]
    assert loopback.seen == []


async def test_each_redirect_is_checked_like_the_first_request() -> None:
    def redirect(seen: Seen) -> Reply:
        if seen.path == "/start":
            return 302, {"Location": "/next"}, b""
        if seen.path == "/next":
            return 302, {"Location": f"http://localhost:{other.port}/inside"}, b""
        return 200, {}, b"should never be reached"

    other, loopback = twin_servers(redirect)
    policy = OutboundPolicy(
        resolver=Resolver(["127.0.0.2"], ["127.0.0.2"], ["127.0.0.1"]),
        check_address=public_stand_in,
        ports=frozenset({other.port}),
    )
    with serving(other, loopback), pytest.raises(OutboundRefusedError, match="loopback"):
        await fetch(
            "GET",
            f"http://public.example:{other.port}/start",
            policy=policy,
            timeout_s=10,
            max_bytes=1000,
            max_redirects=5,
        )
    assert [s.path for s in other.seen] == ["/start", "/next"]
    assert loopback.seen == []


async def test_redirects_are_not_followed_when_none_are_allowed() -> None:
    server = LocalServer("127.0.0.2", lambda _: (301, {"Location": "http://elsewhere/"}, b""))
    policy = OutboundPolicy(
        resolver=Resolver(["127.0.0.2"]),
        check_address=public_stand_in,
        ports=frozenset({server.port}),
    )
    with serving(server):
        response = await fetch(
            "GET", f"http://public.example:{server.port}/", policy=policy, timeout_s=10,
            max_bytes=100,
        )  # fmt: skip
    assert (response.status, response.headers["location"]) == (301, "http://elsewhere/")


async def test_tls_is_verified_for_the_name_while_connecting_to_the_address() -> None:
    ca = trustme.CA()
    client = ssl.create_default_context()
    ca.configure_trust(client)

    def https_server(name: str) -> LocalServer:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(name).configure_cert(context)
        return LocalServer("127.0.0.2", tls=context)

    good, wrong = https_server("hook.example"), https_server("other.example")

    def policy(port: int) -> OutboundPolicy:
        return OutboundPolicy(
            resolver=Resolver(["127.0.0.2"]),
            check_address=public_stand_in,
            ports=frozenset({port}),
        )

    with serving(good, wrong):
        response = await fetch(
            "GET", f"https://hook.example:{good.port}/", policy=policy(good.port),
            timeout_s=10, max_bytes=100, verify=client,
        )  # fmt: skip
        assert response.status == 200
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await fetch(
                "GET", f"https://hook.example:{wrong.port}/", policy=policy(wrong.port),
                timeout_s=10, max_bytes=100, verify=client,
            )  # fmt: skip
    assert good.server_names == ["hook.example"]
    assert good.seen[0].headers["host"] == f"hook.example:{good.port}"
    assert wrong.seen == []


async def test_trusted_host_on_loopback_is_reached_by_name_on_any_port() -> None:
    server = LocalServer("127.0.0.1")
    resolver = Resolver()
    policy = OutboundPolicy(trusted_hosts=("127.0.0.1",), resolver=resolver)
    with serving(server):
        response = await fetch(
            "POST", f"{server.base}/hook", policy=policy, timeout_s=10, max_bytes=0,
            content=b'{"a": 1}', headers={"Content-Type": "application/json"},
        )  # fmt: skip
    assert response.status == 200
    assert response.body == b""
    assert server.seen[0].body == b'{"a": 1}'
    assert resolver.asked == []


async def test_the_body_read_is_bounded_even_when_compressed() -> None:
    big = b"x" * 300_000
    bomb = gzip.compress(b"\0" * 20_000_000)

    def answer(seen: Seen) -> Reply:
        if seen.path == "/bomb":
            return 200, {"Content-Encoding": "gzip"}, bomb
        return 200, {"Content-Type": "text/plain"}, big

    server = LocalServer("127.0.0.1", answer)
    policy = OutboundPolicy(trusted_hosts=("127.0.0.1",))
    with serving(server):
        plain = await fetch(
            "GET", f"{server.base}/big", policy=policy, timeout_s=10, max_bytes=1000
        )
        inflated = await fetch(
            "GET", f"{server.base}/bomb", policy=policy, timeout_s=10, max_bytes=1000
        )
    assert (len(plain.body), plain.truncated) == (1000, True)
    assert (inflated.body, inflated.truncated) == (b"\0" * 1000, True)


async def test_the_whole_exchange_is_bounded_in_time() -> None:
    def stall(_: Seen) -> Reply:
        server.release.wait(30)
        return 200, {}, b"late"

    server = LocalServer("127.0.0.1", stall)
    policy = OutboundPolicy(trusted_hosts=("127.0.0.1",))
    with serving(server):
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await fetch("GET", f"{server.base}/", policy=policy, timeout_s=0.5, max_bytes=10)
        assert time.monotonic() - started < 10
