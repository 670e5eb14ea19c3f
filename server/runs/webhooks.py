"""Run-completion webhooks: URLs checked against SSRF when a run or cron is accepted, and every
POST sent to the address checked for it (nodes/outbound.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from nodes.outbound import OutboundPolicy, OutboundRefusedError, check_url, fetch
from server.settings import Settings

log = logging.getLogger(__name__)


def webhook_policy(settings: Settings) -> OutboundPolicy:
    """Where webhooks may go: any host on a public address and an allowed port
    (OUTBOUND_ALLOWED_PORTS); hosts in WEBHOOK_ALLOWED_HOSTS anywhere, on any port."""
    return OutboundPolicy(
        trusted_hosts=tuple(settings.webhook_allowed_hosts),
        ports=frozenset(settings.outbound_allowed_ports),
        trust_hint=" (WEBHOOK_ALLOWED_HOSTS lists hosts allowed elsewhere)",
    )


async def check_webhook_url(url: str, *, policy: OutboundPolicy) -> str:
    """Check a webhook URL before a run or cron is accepted; returns the URL unchanged.

    The host is resolved and every address it resolves to must be public (not loopback,
    private, link-local, multicast, reserved, unspecified, or an IPv6 form of one), on an
    allowed port, unless the host is trusted by `policy`.

    Raises:
        OutboundRefusedError: (a `ValueError`) with the reason; routes answer 422 naming `webhook`.
    """
    await check_url(url, policy)
    return url


def shown_url(url: str) -> str:
    """`url` as logs may show it: scheme, host, port and path, without credentials or query
    (webhook URLs often carry a token there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{host}{port}", parts.path, "", ""))


def webhook_payload(
    run: Mapping[str, Any],
    *,
    values: Any = None,
    error: str | None = None,
    run_started_at: datetime | None = None,
    run_ended_at: datetime | None = None,
) -> dict[str, Any]:
    """The JSON POSTed on completion: the run as the API shows it, its final values and times."""
    payload: dict[str, Any] = dict(run)
    payload["run_started_at"] = run_started_at.isoformat() if run_started_at else None
    payload["run_ended_at"] = run_ended_at.isoformat() if run_ended_at else None
    payload["webhook_sent_at"] = datetime.now(UTC).isoformat()
    payload["values"] = values
    if error is not None:
        payload["error"] = error
    return payload


async def send_webhook(
    url: str,
    payload: Mapping[str, Any],
    *,
    policy: OutboundPolicy,
    timeout_s: float = 10.0,
    attempts: int = 3,
    backoff_s: float = 0.5,
    verify: ssl.SSLContext | bool = True,
) -> bool:
    """POST `payload` as JSON to `url`; retries 5xx, 429 and transport errors, gives up after
    `attempts`. Returns whether the receiver answered 2xx; never raises.

    Each attempt resolves the host again, checks every address, and connects to a checked
    one (DNS may have changed since the run was accepted); each attempt takes at most
    `timeout_s`, redirects are never followed and the receiver's answer is not read.
    """
    body = json.dumps(dict(payload), ensure_ascii=False, default=str).encode()
    where = shown_url(url)
    headers = {"Content-Type": "application/json", "User-Agent": "switchboard-webhook"}
    delay = backoff_s
    for attempt in range(1, max(1, attempts) + 1):
        try:
            response = await fetch(
                "POST",
                url,
                policy=policy,
                timeout_s=timeout_s,
                max_bytes=0,
                content=body,
                headers=headers,
                verify=verify,
            )
        except OutboundRefusedError as error:
            log.warning("webhook not sent: %s", error)
            return False
        except (httpx.HTTPError, TimeoutError) as error:
            log.warning("webhook %s attempt %d failed: %r", where, attempt, error)
        else:
            if 200 <= response.status < 300:
                return True
            log.warning("webhook %s attempt %d got HTTP %d", where, attempt, response.status)
            if response.status < 500 and response.status != 429:
                return False
        if attempt < attempts:
            await asyncio.sleep(delay)
            delay *= 2
    return False
