"""The http_get tool: only allow-listed hosts, only public addresses and allowed ports, the
connection pinned to the checked address, redirects re-checked, the body truncated."""

from __future__ import annotations

import dataclasses

import pytest

from nodes.context import AgentContext
from nodes.outbound import OutboundPolicy, address_refused
from nodes.tools.http_get import HTTP_GET, get_page, tool_policy
from nodes.tools.registry import ToolEnv, ToolError
from tests.unit.local_http import LocalServer, Reply, Seen, serving, twin_servers


def _env(**context: object) -> ToolEnv:
    return ToolEnv(context=AgentContext(**context), store=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "allowed", "reason"),
    [
        ("https://example.org/", ("example.com",), "allow-list"),
        ("http://localhost/", ("localhost",), "loopback"),
        ("http://127.0.0.1/", ("127.0.0.1",), "loopback"),
        ("http://169.254.169.254/latest/meta-data/", ("169.254.169.254",), "link-local"),
        ("http://[::ffff:169.254.169.254]/", ("::ffff:169.254.169.254",), "link-local"),
        ("http://localhost:8000/", ("localhost",), "port 8000 is not allowed"),
        ("file:///etc/passwd", ("localhost",), "http or https"),
    ],
)
async def test_http_get_refuses_with_a_reason_the_model_reads(
    url: str, allowed: tuple[str, ...], reason: str
) -> None:
    assert HTTP_GET.run is not None  # http_get waits on the network: an async `run` tool
    with pytest.raises(ToolError, match=reason):
        await HTTP_GET.run({"url": url}, _env(http_allowed_hosts=allowed))


def test_tool_policy_follows_the_context() -> None:
    policy = tool_policy(AgentContext(http_allowed_hosts=("*.example.com",)))
    assert policy.allowed_hosts == ("*.example.com",)
    assert policy.ports == frozenset({80, 443})
    assert policy.trusted_hosts == ()
    ported = tool_policy(AgentContext(http_allowed_ports=(8443,)))
    assert ported.ports == frozenset({8443})


def _stand_in_policy(context: AgentContext, resolver_answers: list[list[str]]) -> OutboundPolicy:
    """The tool's policy with an injected resolver, 127.0.0.2 standing in for a public address."""

    async def resolver(host: str, port: int) -> list[str]:
        return resolver_answers.pop(0)

    return dataclasses.replace(
        tool_policy(context),
        resolver=resolver,
        check_address=lambda a: None if a == "127.0.0.2" else address_refused(a),
    )


async def test_http_get_reads_an_allowed_page_from_the_checked_address() -> None:
    other, loopback = twin_servers(lambda _: (200, {"Content-Type": "text/plain"}, b"x" * 5000))
    context = AgentContext(http_allowed_hosts=("localhost",), http_allowed_ports=(other.port,))
    with serving(other, loopback):
        page = await get_page(
            f"http://localhost:{other.port}/doc",
            policy=_stand_in_policy(context, [["127.0.0.2"]]),
            timeout_s=10,
            max_bytes=100,
            max_redirects=0,
        )
    assert page == "HTTP 200\n" + "x" * 100 + "\n[truncated to 100 bytes]"
    assert other.seen[0].headers["user-agent"] == "switchboard-agent"
    assert loopback.seen == []


async def test_http_get_redirect_off_the_allow_list_is_refused() -> None:
    def answer(seen: Seen) -> Reply:
        return 302, {"Location": "https://evil.example/steal"}, b""

    server = LocalServer("127.0.0.2", answer)
    context = AgentContext(http_allowed_hosts=("docs.example",), http_allowed_ports=(server.port,))
    with serving(server), pytest.raises(ToolError, match=r"evil\.example' is not on the allow"):
        await get_page(
            f"http://docs.example:{server.port}/",
            policy=_stand_in_policy(context, [["127.0.0.2"]]),
            timeout_s=10,
            max_bytes=100,
            max_redirects=3,
        )
    assert len(server.seen) == 1


async def test_http_get_says_when_a_server_does_not_answer_in_time() -> None:
    def stall(_: Seen) -> Reply:
        server.release.wait(30)
        return 200, {}, b""

    server = LocalServer("127.0.0.2", stall)
    context = AgentContext(http_allowed_hosts=("slow.example",), http_allowed_ports=(server.port,))
    with serving(server), pytest.raises(ToolError, match=r"within 0\.3 s"):
        await get_page(
            f"http://slow.example:{server.port}/",
            policy=_stand_in_policy(context, [["127.0.0.2"]]),
            timeout_s=0.3,
            max_bytes=100,
            max_redirects=0,
        )
