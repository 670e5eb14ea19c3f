"""The Agent Server API driven by the official JS client, `@langchain/langgraph-sdk` from npm:
Agent Chat UI's flow through its own hook (`useStream`), on Switchboard and, for parity, on
`langgraph dev` serving the same project (tests/js/agent_chat_ui.mjs asserts every step)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.js_support import node_project, run_node
from tests.support import LANGGRAPH, ROOT, langgraph_dev, make_settings, running_server

AGENT_CHAT = ROOT / "tests" / "projects" / "agent_chat" / "langgraph.json"


@pytest.fixture(scope="module")
def switchboard(database_url: str, data_dir: Path) -> Iterator[str]:
    """Switchboard serving the Agent Chat UI test project (tests/projects/agent_chat)."""
    node_project()
    settings = make_settings(
        database_url, data_dir, migrate_on_start=False, langgraph_config=AGENT_CHAT
    )
    with running_server(settings) as url:
        yield url


def _check_flow(steps: dict[str, Any]) -> None:
    assert steps["submit"]["answer"].startswith("You said: hello there")
    assert steps["submit"]["partial"] >= 2  # tokens shown as they came
    assert steps["regenerate"]["branches"] == 2
    assert steps["resume"]["answer"].startswith("Decision:")
    assert steps["join"]["after"] < steps["join"]["replayed"]
    assert steps["status after stream"]["statuses"] == ["success"] * 5
    assert "done" in steps


def test_agent_chat_ui_flow_works_on_switchboard(switchboard: str) -> None:
    _check_flow(run_node("agent_chat_ui.mjs", switchboard))


def test_the_same_flow_passes_on_langgraph_dev(tmp_path: Path) -> None:
    """The script's expectations are LangGraph's own: it passes on `langgraph dev` too."""
    if not LANGGRAPH.exists():
        pytest.skip("langgraph-cli[inmem] is not installed (pip install -e '.[dev]')")
    node_project()
    with langgraph_dev(AGENT_CHAT, log=tmp_path / "dev.log") as url:
        _check_flow(run_node("agent_chat_ui.mjs", url))
