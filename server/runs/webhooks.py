"""Run-completion webhooks: URLs checked against SSRF at creation and again before each POST."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from nodes.tools.http_get import address_refused, host_allowed

log = logging.getLogger(__name__)

MAX_URL_CHARS = 2000


def _parse(url: str, allowed_hosts: Sequence[str]) -> tuple[str, int, bool]:
    """Check the shape of `url`; returns (host, port, allow-listed) or raises `ValueError`."""
    if not isinstance(url, str) or not url:
        raise ValueError("the webhook URL must be a non-empty string")
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"the webhook URL is longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        port_value = parts.port
    except ValueError as error:
        raise ValueError(f"the webhook URL {url!r} is malformed: {error}") from error
    if parts.scheme not in {"http", "https"}:
        raise ValueError(
            f"the webhook URL must be http or https, not {parts.scheme or 'relative'!r}"
        )
    host = parts.hostname
    if not host:
        raise ValueError(f"the webhook URL {url!r} has no host")
    if parts.username or parts.password:
        raise ValueError("webhook URLs with credentials are refused")
    port = port_value or (443 if parts.scheme == "https" else 80)
    return host, port, host_allowed(host, allowed_hosts)


def _refuse_addresses(host: str, addresses: Sequence[str]) -> None:
    if not addresses:
        raise ValueError(f"the webhook host {host!r} resolves to no address")
    for address in addresses:
        reason = address_refused(address)
        if reason is not None:
            raise ValueError(
                f"the webhook host {host!r} resolves to a {reason} address ({address}); "
                "webhooks may only reach public addresses unless the host is allow-listed"
            )


def _addresses(infos: Sequence[tuple[Any, ...]]) -> list[str]:
    return sorted({str(info[4][0]) for info in infos})


def validate_webhook_url(url: str, *, allowed_hosts: Sequence[str]) -> str:
    """Check a webhook URL before a run or cron is accepted; returns the URL unchanged.

    The host is resolved and every address it resolves to must be public (not loopback,
    private, link-local, multicast, reserved or unspecified), unless the host is listed in
    `allowed_hosts` (setting `WEBHOOK_ALLOWED_HOSTS`, `*.domain` entries allowed).

    Raises:
        ValueError: with the reason the URL is refused (routes answer 422 naming `webhook`).
    """
    host, port, allowed = _parse(url, allowed_hosts)
    if allowed:
        return url
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise ValueError(f"cannot resolve the webhook host {host!r}: {error}") from error
    _refuse_addresses(host, _addresses(infos))
    return url


async def check_webhook_url(url: str, *, allowed_hosts: Sequence[str]) -> str:
    """`validate_webhook_url` resolving the host without blocking the event loop."""
    host, port, allowed = _parse(url, allowed_hosts)
    if allowed:
        return url
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise ValueError(f"cannot resolve the webhook host {host!r}: {error}") from error
    _refuse_addresses(host, _addresses(infos))
    return url


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
    allowed_hosts: Sequence[str],
    timeout_s: float = 10.0,
    attempts: int = 3,
    backoff_s: float = 0.5,
    client: httpx.AsyncClient | None = None,
) -> bool:
    """POST `payload` as JSON to `url`; retries 5xx/transport errors, gives up after `attempts`.

    The URL is checked again first (DNS may have changed since the run was accepted), and
    redirects are never followed. Returns whether the receiver answered 2xx; never raises.
    """
    try:
        await check_webhook_url(url, allowed_hosts=allowed_hosts)
    except ValueError as error:
        log.warning("webhook not sent: %s", error)
        return False
    body = httpx.Request("POST", url, json=dict(payload)).content
    headers = {"Content-Type": "application/json", "User-Agent": "switchboard-webhook"}
    owned = client is None
    http = client or httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
    try:
        delay = backoff_s
        for attempt in range(1, max(1, attempts) + 1):
            try:
                response = await http.post(url, content=body, headers=headers, timeout=timeout_s)
            except httpx.HTTPError as error:
                log.warning("webhook %s attempt %d failed: %s", url, attempt, error)
            else:
                if response.is_success:
                    return True
                log.warning("webhook %s attempt %d got HTTP %d", url, attempt, response.status_code)
                if response.status_code < 500 and response.status_code != 429:
                    return False
            if attempt < attempts:
                await asyncio.sleep(delay)
                delay *= 2
        return False
    finally:
        if owned:
            await http.aclose()
