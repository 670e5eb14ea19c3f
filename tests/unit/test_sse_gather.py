"""The SSE response's writes (server/sse.py `EventStream`): the events its iterator has ready
together go out in one body message; none is held back while it waits for the next; a client
that leaves while a write waits still unwinds the iterator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import pytest
from starlette.types import Message

from server.sse import EventStream, encode_event

Event = tuple[int | str | None, str, Any]


def body(seq: int) -> bytes:
    return encode_event(seq, "token", b'{"text":"t%d"}' % seq)


class Client:
    """An ASGI server's side of one response: what it was sent, when; leaves when told."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.left = asyncio.Event()
        self.hold: asyncio.Event | None = None  # a write waits for it (flow control)

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            if self.hold is not None:
                await self.hold.wait()
            self.bodies.append(message["body"])

    async def receive(self) -> Message:
        await self.left.wait()
        return {"type": "http.disconnect"}


async def respond(events: AsyncIterator[Event], client: Client) -> None:
    scope: dict[str, Any] = {"type": "http", "method": "POST", "headers": []}
    await EventStream(events, heartbeat_s=60)(scope, client.receive, client.send)


async def test_events_ready_together_go_out_in_one_write_and_none_waits() -> None:
    client = Client()
    more, waiting = asyncio.Event(), asyncio.Event()
    seen_before_more: list[list[bytes]] = []

    async def events() -> AsyncIterator[Event]:
        for seq in (1, 2, 3):  # ready together (a writer's batch)
            yield seq, "token", {"text": f"t{seq}"}
        await asyncio.sleep(0)
        seen_before_more.append(list(client.bodies))  # sent before the iterator waits
        waiting.set()
        await more.wait()
        yield 4, "token", {"text": "t4"}

    task = asyncio.create_task(respond(events(), client))
    await asyncio.wait_for(waiting.wait(), 5)
    more.set()
    await task
    assert seen_before_more == [[body(1) + body(2) + body(3)]]
    assert client.bodies == [body(1) + body(2) + body(3), body(4)]


async def test_an_iterator_that_never_waits_is_written_in_bounded_groups() -> None:
    client = Client()

    async def events() -> AsyncIterator[Event]:
        for seq in range(1, 41):
            yield seq, "token", {"text": f"t{seq}"}

    await respond(events(), client)
    assert [len(b) for b in client.bodies] == [
        len(b"".join(body(s) for s in range(1, 33))),
        len(b"".join(body(s) for s in range(33, 41))),
    ]
    assert b"".join(client.bodies) == b"".join(body(s) for s in range(1, 41))


async def test_a_client_leaving_while_a_write_waits_unwinds_the_waiting_iterator() -> None:
    client = Client()
    client.hold = asyncio.Event()  # the write of the first events never completes
    unwound = asyncio.Event()
    waiting = asyncio.Event()

    async def events() -> AsyncGenerator[Event, None]:
        try:
            yield 1, "token", {"text": "t1"}
            waiting.set()
            await asyncio.Event().wait()
            yield 2, "token", {"text": "t2"}
        finally:
            await asyncio.sleep(0)  # its cleanup awaits, too
            unwound.set()

    iterator = events()
    task = asyncio.create_task(respond(iterator, client))
    await asyncio.wait_for(waiting.wait(), 5)
    await asyncio.sleep(0.01)  # the write of event 1 is waiting now
    client.left.set()
    await asyncio.wait_for(task, 5)  # the client left: the response ends, without an error
    assert unwound.is_set()
    assert client.bodies == []
    await iterator.aclose()  # already done: nothing runs


async def test_the_events_before_an_iterators_failure_go_out() -> None:
    client = Client()

    async def events() -> AsyncIterator[Event]:
        yield 1, "token", {"text": "t1"}
        yield 2, "token", {"text": "t2"}
        raise ConnectionResetError("the connection broke")

    with pytest.raises(ConnectionResetError):
        await respond(events(), client)
    assert client.bodies == [body(1) + body(2)]
