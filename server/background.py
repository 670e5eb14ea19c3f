"""Background loops of the lifespan: none stops for good on an error, each logs it and goes on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def supervise(
    name: str,
    body: Callable[[], Awaitable[None]],
    *,
    pause_s: float = 0.5,
    max_pause_s: float = 30.0,
) -> None:
    """Run `body()` until it returns or is cancelled; when it raises, log why and run it again
    after a pause that doubles each time (up to `max_pause_s`), so a loop that fails while
    PostgreSQL restarts (a listener, the event writer, a run worker) comes back by itself."""
    pause = pause_s
    while True:
        try:
            await body()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s stopped on an error; restarting it in %.1f s", name, pause)
        await asyncio.sleep(pause)
        pause = min(pause * 2, max_pause_s)


async def sweep_forever(
    name: str, interval_s: float, sweep: Callable[[], Awaitable[str | None]]
) -> None:
    """Run `sweep` every `interval_s` seconds until cancelled; log what it did or why it failed."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            done = await sweep()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning(
                "%s failed (next try in %.0f s): %s: %s",
                name,
                interval_s,
                type(error).__name__,
                error,
            )
            continue
        if done:
            log.info("%s: %s", name, done)
