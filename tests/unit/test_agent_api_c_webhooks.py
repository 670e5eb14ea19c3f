"""Webhook URLs are refused on loopback/private/link-local hosts; delivery retries 5xx only."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from server.runs.webhooks import send_webhook, validate_webhook_url, webhook_payload
from stores.errors import InvalidInputError
from stores.sql.crons import check_schedule, check_timezone, next_run_after


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8123/hook", "loopback"),
        ("http://localhost/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://10.0.0.1/hook", "private"),
        ("http://192.168.1.20/hook", "private"),
        ("http://172.16.0.5/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://0.0.0.0/hook", "private|unspecified"),
        ("http://224.0.0.1/hook", "multicast"),
        ("ftp://example.com/hook", "http or https"),
        ("/relative/hook", "http or https"),
        ("http://user:pw@8.8.8.8/hook", "credentials"),
    ],
)
def test_webhook_url_refused_with_reason(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        validate_webhook_url(url, allowed_hosts=[])


def test_public_address_and_allow_listed_loopback_are_accepted() -> None:
    assert validate_webhook_url("https://8.8.8.8/hook", allowed_hosts=[]) == "https://8.8.8.8/hook"
    url = "http://127.0.0.1:9/hook"
    assert validate_webhook_url(url, allowed_hosts=["127.0.0.1"]) == url
    with pytest.raises(ValueError, match="private"):
        validate_webhook_url("http://10.0.0.1/", allowed_hosts=["127.0.0.1"])


class _Receiver:
    """A local HTTP server answering webhook POSTs with queued statuses, recording bodies."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.bodies: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                code = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def receiver_factory() -> Iterator[list[_Receiver]]:
    made: list[_Receiver] = []
    yield made
    for receiver in made:
        receiver.server.shutdown()
        receiver.server.server_close()


def _start(made: list[_Receiver], statuses: list[int]) -> _Receiver:
    receiver = _Receiver(statuses)
    threading.Thread(target=receiver.server.serve_forever, daemon=True).start()
    made.append(receiver)
    return receiver


async def test_webhook_retries_server_errors_then_delivers(
    receiver_factory: list[_Receiver],
) -> None:
    receiver = _start(receiver_factory, [503, 500])
    payload = webhook_payload(
        {"run_id": "r1", "status": "success"},
        values={"answer": 42},
        run_started_at=datetime(2026, 1, 1, tzinfo=UTC),
        run_ended_at=datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC),
    )
    delivered = await send_webhook(
        receiver.url, payload, allowed_hosts=["127.0.0.1"], attempts=3, backoff_s=0.01
    )
    assert delivered
    assert len(receiver.bodies) == 3
    assert receiver.bodies[-1]["run_id"] == "r1"
    assert receiver.bodies[-1]["values"] == {"answer": 42}
    assert receiver.bodies[-1]["run_ended_at"] == "2026-01-01T00:00:01+00:00"


async def test_webhook_gives_up_on_client_error_and_after_attempts(
    receiver_factory: list[_Receiver],
) -> None:
    refusing = _start(receiver_factory, [404])
    assert not await send_webhook(refusing.url, {}, allowed_hosts=["127.0.0.1"], backoff_s=0.01)
    assert len(refusing.bodies) == 1
    failing = _start(receiver_factory, [500, 500, 500, 500])
    assert not await send_webhook(
        failing.url, {}, allowed_hosts=["127.0.0.1"], attempts=2, backoff_s=0.01
    )
    assert len(failing.bodies) == 2


async def test_webhook_to_loopback_is_not_sent_without_allow_list(
    receiver_factory: list[_Receiver],
) -> None:
    receiver = _start(receiver_factory, [])
    assert not await send_webhook(receiver.url, {}, allowed_hosts=[], backoff_s=0.01)
    assert receiver.bodies == []


def test_schedule_and_timezone_are_checked_by_field() -> None:
    assert check_schedule(" */5 * * * * ") == "*/5 * * * *"
    for schedule in ("61 * * * *", "0 0 30 2 *", ""):
        with pytest.raises(InvalidInputError) as bad_schedule:
            check_schedule(schedule)
        assert bad_schedule.value.field == "schedule"
    assert check_timezone(None) == "UTC"
    with pytest.raises(InvalidInputError) as bad_zone:
        check_timezone("Mars/Olympus_Mons")
    assert bad_zone.value.field == "timezone"


def test_next_run_follows_the_cron_timezone_across_dst() -> None:
    # 09:00 in New York is 14:00 UTC in winter and 13:00 UTC after the March DST change.
    winter = next_run_after(
        "0 9 * * *", "America/New_York", after=datetime(2026, 3, 7, 12, tzinfo=UTC)
    )
    summer = next_run_after(
        "0 9 * * *", "America/New_York", after=datetime(2026, 3, 8, 12, tzinfo=UTC)
    )
    assert winter == datetime(2026, 3, 7, 14, tzinfo=UTC)
    assert summer == datetime(2026, 3, 8, 13, tzinfo=UTC)
    seconds = next_run_after(
        "* * * * * */2", "UTC", after=datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    )
    assert seconds == datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC)
