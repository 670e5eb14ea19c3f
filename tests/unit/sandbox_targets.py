"""Functions the sandbox tests ask worker processes to run (imported by the workers)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from nodes.tools.errors import ToolError


def echo(args: Mapping[str, Any]) -> str:
    """Returns `args["text"]`."""
    return str(args["text"])


def spin(args: Mapping[str, Any]) -> str:
    """Computes for ever (a thread could not be stopped)."""
    n = 0
    while True:
        n += 1


def hog(args: Mapping[str, Any]) -> str:
    """Allocates `args["mb"]` MiB."""
    return str(len(bytearray(int(args["mb"]) * 1024 * 1024)))


def refuse(args: Mapping[str, Any]) -> str:
    """Refuses, as a tool does."""
    raise ToolError("no, because " + str(args.get("why", "")))


def shout(args: Mapping[str, Any]) -> str:
    """Answers `args["n"]` characters."""
    return "x" * int(args["n"])


def pid(args: Mapping[str, Any]) -> str:
    """The worker's process id."""
    return str(os.getpid())
