"""Webhooks: URLs refused on loopback/private/link-local hosts and on other ports unless the
host is allow-listed; every POST re-checked (DNS rebinding between acceptance and delivery
fails); delivery retries 5xx only."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from nodes.outbound import OutboundPolicy, OutboundRefusedError
from server.runs.webhooks import check_webhook_url, send_webhook, webhook_payload, webhook_policy
from server.settings import Settings
from tests.unit.local_http import LocalServer, Reply, Seen, serving


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:80/hook", "loopback"),
        ("http://localhost/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::ffff:10.0.0.1]/hook", "private"),
        ("http://10.0.0.1/hook", "private"),
        ("http://192.168.1.20/hook", "private"),
        ("http://172.16.0.5/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[2002:a9fe:a9fe::]/latest/meta-data", "6to4 address embedding a link-local"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://224.0.0.1/hook", "multicast"),
        ("http://8.8.8.8:8123/hook", "port 8123 is not allowed"),
        ("ftp://example.com/hook", "http or https"),
        ("/relative/hook", "http or https"),
        ("http://user:pw@8.8.8.8/hook", "credentials"),
    ],
)
async def test_webhook_url_refused_with_reason(url: str, reason: str) -> None:
    with pytest.raises(OutboundRefusedError, match=reason):
        await check_webhook_url(url, policy=webhook_policy(settings()))


async def test_public_address_and_allow_listed_loopback_are_accepted() -> None:
    policy = webhook_policy(settings())
    assert await check_webhook_url("https://8.8.8.8/hook", policy=policy) == "https://8.8.8.8/hook"
    url = "http://127.0.0.1:9/hook"
    listed = webhook_policy(settings(webhook_allowed_hosts=["127.0.0.1"]))
    assert await check_webhook_url(url, policy=listed) == url
    with pytest.raises(OutboundRefusedError, match="private"):
        await check_webhook_url("http://10.0.0.1/", policy=listed)
    ported = webhook_policy(settings(outbound_allowed_ports=[443, 8443]))
    with pytest.raises(OutboundRefusedError, match=r"port 80 is not allowed \(.*443, 8443"):
        await check_webhook_url("http://8.8.8.8/", policy=ported)


def _receiver(statuses: Sequence[int]) -> LocalServer:
    queued = list(statuses)

    def answer(_: Seen) -> Reply:
        return (queued.pop(0) if queued else 200), {}, b""

    return LocalServer("127.0.0.1", answer)


def _listed() -> OutboundPolicy:
    return webhook_policy(settings(webhook_allowed_hosts=["127.0.0.1"]))


async def test_webhook_retries_server_errors_then_delivers() -> None:
    receiver = _receiver([503, 500])
    payload = webhook_payload(
        {"run_id": "r1", "status": "success"},
        values={"answer": 42},
        run_started_at=datetime(2026, 1, 1, tzinfo=UTC),
        run_ended_at=datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC),
    )
    with serving(receiver):
        delivered = await send_webhook(
            f"{receiver.base}/hook", payload, policy=_listed(), attempts=3, backoff_s=0.01
        )
    assert delivered
    bodies = [json.loads(seen.body) for seen in receiver.seen]
    assert len(bodies) == 3
    assert bodies[-1]["run_id"] == "r1"
    assert bodies[-1]["values"] == {"answer": 42}
    assert bodies[-1]["run_ended_at"] == "2026-01-01T00:00:01+00:00"
    assert receiver.seen[-1].headers["content-type"] == "application/json"


async def test_webhook_gives_up_on_client_error_and_after_attempts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refusing, failing = _receiver([404]), _receiver([500, 500, 500, 500])
    with serving(refusing, failing), caplog.at_level(logging.WARNING):
        assert not await send_webhook(
            f"{refusing.base}/hook?token=tok-in-url", {}, policy=_listed(), backoff_s=0.01
        )
        assert not await send_webhook(
            f"{failing.base}/hook", {}, policy=_listed(), attempts=2, backoff_s=0.01
        )
    assert (len(refusing.seen), len(failing.seen)) == (1, 2)
    assert f"webhook {refusing.base}/hook attempt 1 got HTTP 404" in caplog.text
    assert "tok-in-url" not in caplog.text  # a token in the URL stays out of the log


async def test_webhook_does_not_follow_redirects() -> None:
    moved = LocalServer("127.0.0.1", lambda _: (307, {"Location": "/elsewhere"}, b""))
    with serving(moved):
        assert not await send_webhook(f"{moved.base}/hook", {}, policy=_listed(), backoff_s=0.01)
    assert [seen.path for seen in moved.seen] == ["/hook"]


async def test_webhook_to_loopback_is_not_sent_without_allow_list() -> None:
    receiver = _receiver([])
    with serving(receiver):
        policy = webhook_policy(settings(outbound_allowed_ports=[receiver.port]))
        assert not await send_webhook(f"{receiver.base}/hook", {}, policy=policy)
    assert receiver.seen == []


async def test_webhook_host_that_rebinds_to_loopback_after_acceptance_is_not_called(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Accepted while the name resolves to a public address; by the time the run ends it
    # resolves to 127.0.0.1, where a receiver listens. "localhost" would reach it by name.
    receiver = _receiver([])
    answers = [["93.184.215.14"], ["127.0.0.1"]]

    async def rebinding(host: str, port: int) -> list[str]:
        return answers.pop(0)

    policy = OutboundPolicy(resolver=rebinding, ports=frozenset({receiver.port}))
    url = f"http://localhost:{receiver.port}/hook"
    with serving(receiver), caplog.at_level(logging.WARNING, "server.runs.webhooks"):
        assert await check_webhook_url(url, policy=policy) == url
        assert not await send_webhook(url, {"run_id": "r1"}, policy=policy, backoff_s=0.01)
    assert receiver.seen == []
    assert "loopback address (127.0.0.1)" in caplog.text
