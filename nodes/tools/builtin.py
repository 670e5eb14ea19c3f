"""The built-in tools, in the order they are listed to a model."""

from __future__ import annotations

from nodes.tools.calculator import CALCULATOR
from nodes.tools.clock import CURRENT_TIME
from nodes.tools.http_get import HTTP_GET
from nodes.tools.knowledge_search import KNOWLEDGE_SEARCH
from nodes.tools.memory_tools import FORGET, REMEMBER
from nodes.tools.registry import ToolSpec

BUILTIN_TOOLS: tuple[ToolSpec, ...] = (
    KNOWLEDGE_SEARCH,
    CALCULATOR,
    CURRENT_TIME,
    REMEMBER,
    FORGET,
    HTTP_GET,
)
