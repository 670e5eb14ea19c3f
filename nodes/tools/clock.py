"""The `current_time` tool: the date and time now, in UTC or an IANA time zone."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nodes.tools.registry import ToolEnv, ToolError, ToolSpec


async def _current_time(args: Mapping[str, Any], env: ToolEnv) -> str:
    return await asyncio.to_thread(_now_in, str(args.get("timezone") or "UTC"))


def _now_in(name: str) -> str:
    """The time now in zone `name` (reading the zone's file: done in a thread)."""
    try:
        zone = UTC if name.upper() == "UTC" else ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ToolError(
            f"unknown time zone {name!r}; use an IANA name like Europe/Paris"
        ) from error
    now = datetime.now(zone)
    return f"{now:%A %d %B %Y, %H:%M:%S} {name} ({now.isoformat(timespec='seconds')})"


CURRENT_TIME = ToolSpec(
    name="current_time",
    description="The current date and time, in UTC or in the IANA time zone given.",
    parameters={
        "type": "object",
        "properties": {
            "timezone": {
                "type": "string",
                "description": "IANA time zone such as 'Europe/Paris'; UTC when omitted.",
                "maxLength": 64,
            }
        },
        "required": [],
        "additionalProperties": False,
    },
    run=_current_time,
)
