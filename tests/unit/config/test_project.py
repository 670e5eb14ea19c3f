"""Loading a LangGraph project folder: paths relative to its langgraph.json, env before imports,
the folder on sys.path, one clear message per failure, one warning per unsupported key."""

from __future__ import annotations

import json
import logging
import os
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk import Auth

from server.config import ProjectError, load_project, read_project
from server.config.project import apply_env

ROOT = Path(__file__).resolve().parents[3]

GRAPH_FILE = """
import os
from typing import TypedDict
from langgraph.graph import START, StateGraph

GREETING = os.environ["{var}"]  # read at import: the project's env must be set by now

class State(TypedDict, total=False):
    text: str

def echo(state: State) -> dict:
    return {{"text": GREETING + state.get("text", "")}}

builder = StateGraph(State)
builder.add_node("echo", echo)
builder.add_edge(START, "echo")
graph = builder.compile()
not_a_graph = 42
"""


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a project extends sys.path and the environment: undo both after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))


def write_project(root: Path, config: dict[str, Any], files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    config_path = root / "langgraph.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    return config_path


def fresh_var(monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"SB_TEST_{uuid.uuid4().hex[:8].upper()}"
    monkeypatch.delenv(name, raising=False)  # restored (removed) after the test
    return name


def test_graphs_of_every_path_form_load_relative_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    var = fresh_var(monkeypatch)
    package = f"pkg_{uuid.uuid4().hex[:8]}"
    config = {
        "dependencies": [".", "./libs"],
        "graphs": {
            "by_file": "./agents/echo.py:graph",
            "by_module": {"path": f"{package}.factory:make", "description": "Made per run."},
        },
        "env": {var: "hi "},
    }
    files = {
        "agents/echo.py": GRAPH_FILE.format(var=var),
        f"{package}/__init__.py": "",
        f"{package}/factory.py": (
            "from helper import build\n\ndef make(config):\n    return build()\n"
        ),
        "libs/helper.py": "from langgraph.graph import StateGraph\n"
        "from typing import TypedDict\n\n"
        "class S(TypedDict):\n    x: int\n\n"
        "def build():\n    g = StateGraph(S)\n    g.add_node('n', lambda s: s)\n"
        "    g.set_entry_point('n')\n    return g\n",
    }
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # paths are relative to langgraph.json, not the working dir
    project = load_project(read_project(write_project(tmp_path / "project", config, files)))
    assert os.environ[var] == "hi "
    assert str(tmp_path / "project") in sys.path
    assert str(tmp_path / "project" / "libs") in sys.path
    by_file, by_module = project.graphs["by_file"], project.graphs["by_module"]
    assert by_file.value is not None
    assert by_file.factory is None
    assert by_module.factory is not None
    assert by_module.factory.config_param == "config"
    assert by_module.description == "Made per run."
    assert project.warnings == ()


def test_env_may_be_a_dotenv_file_and_the_process_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, theirs = fresh_var(monkeypatch), fresh_var(monkeypatch)
    monkeypatch.setenv(theirs, "from the process")
    path = write_project(
        tmp_path,
        {"graphs": {"g": "./g.py:graph"}, "env": ".env.project"},
        {".env.project": f"{mine}=from the file\n{theirs}=from the file\n"},
    )
    assert sorted(apply_env(read_project(path))) == [mine]
    assert os.environ[mine] == "from the file"
    assert os.environ[theirs] == "from the process"


BROKEN_GRAPHS = [
    ("def broken(:\n", "SyntaxError"),
    (
        "raise RuntimeError('OPENAI_API_KEY is not set')\n",
        "RuntimeError: OPENAI_API_KEY is not set",
    ),
    (
        "from langgraph.graph import StateGraph\nother = StateGraph(dict)\n",
        "has no variable 'graph'",
    ),
    ("graph = 42\n", "it is a int, not a compiled graph"),
    ("def graph(a, b, c):\n    pass\n", "TypeError: a graph factory takes"),
]


@pytest.mark.parametrize(("source", "error"), BROKEN_GRAPHS)
def test_a_graph_that_fails_to_load_stops_with_one_line_naming_id_path_and_error(
    tmp_path: Path, source: str, error: str
) -> None:
    path = write_project(tmp_path, {"graphs": {"agent": "./agent.py:graph"}}, {"agent.py": source})
    with pytest.raises(ProjectError) as failure:
        load_project(read_project(path))
    message = str(failure.value)
    assert message.startswith("graph 'agent' (./agent.py:graph) failed to load: ")
    assert error in message
    assert "Traceback" not in message


def test_a_missing_graph_file_or_module_is_named(tmp_path: Path) -> None:
    path = write_project(
        tmp_path, {"graphs": {"a": "./nowhere.py:graph", "b": "no_such_pkg.mod:graph"}}, {}
    )
    with pytest.raises(ProjectError, match=r"graph 'a' \(./nowhere.py:graph\).*no file"):
        load_project(read_project(path))
    path = write_project(tmp_path, {"graphs": {"b": "no_such_pkg_xyz.mod:graph"}}, {})
    with pytest.raises(ProjectError, match=r"graph 'b'.*ModuleNotFoundError.*no_such_pkg_xyz"):
        load_project(read_project(path))


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"graphs": {}}, "graphs: .*at least 1 item"),
        ({"graphs": {"a": "./a.py"}}, "names no variable"),
        ({"graphs": {"a": "./a.py:g"}, "store": {"index": {"embed": "x", "dims": 0}}}, "dims"),
        (
            {"graphs": {"a": "./a.py:g"}, "checkpointer": {"ttl": {"strategy": "archive"}}},
            "checkpointer.ttl.strategy",
        ),
        ({"graphs": {"a": "./a.py:g"}, "http": {"disable_threads": "maybe"}}, "disable_threads"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, config: dict[str, Any], error: str) -> None:
    with pytest.raises(ProjectError, match=error):
        read_project(write_project(tmp_path, config, {}))


def test_a_missing_or_malformed_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match=r"no langgraph.json there; .*--config PATH"):
        read_project(tmp_path / "langgraph.json")
    (tmp_path / "langgraph.json").write_text("{graphs: ", encoding="utf-8")
    with pytest.raises(ProjectError, match=r"not valid JSON"):
        read_project(tmp_path / "langgraph.json")


def test_http_app_and_auth_must_be_what_their_keys_need(tmp_path: Path) -> None:
    graph = {"g.py": GRAPH_FILE.format(var="PATH")}
    bad_app = {"graphs": {"g": "./g.py:graph"}, "http": {"app": "./g.py:not_a_graph"}}
    with pytest.raises(ProjectError, match=r"http.app \(./g.py:not_a_graph\).*not a Starlette"):
        load_project(read_project(write_project(tmp_path, bad_app, graph)))
    bad_auth = {"graphs": {"g": "./g.py:graph"}, "auth": {"path": "./g.py:not_a_graph"}}
    with pytest.raises(ProjectError, match=r"auth.path.*not a langgraph_sdk.Auth"):
        load_project(read_project(write_project(tmp_path, bad_auth, graph)))
    no_auth = {"graphs": {"g": "./g.py:graph"}, "auth": {"path": "./auth.py:auth"}}
    with pytest.raises(ProjectError, match=r"auth.path \(./auth.py:auth\).*no file"):
        load_project(read_project(write_project(tmp_path, no_auth, graph)))


def test_the_auth_object_is_loaded_and_kept_for_enforcement(tmp_path: Path) -> None:
    files = {
        "g.py": GRAPH_FILE.format(var="PATH"),
        "auth.py": "from langgraph_sdk import Auth\nauth = Auth()\n",
    }
    config = {
        "graphs": {"g": "./g.py:graph"},
        "auth": {"path": "./auth.py:auth", "disable_studio_auth": True},
        "http": {"enable_custom_route_auth": True},
    }
    project = load_project(read_project(write_project(tmp_path, config, files)))
    assert isinstance(project.auth, Auth)
    assert project.file.config.auth is not None
    assert project.file.config.auth.disable_studio_auth
    assert project.http.enable_custom_route_auth
    assert not [w for w in project.warnings if "auth" in w]


def test_each_unsupported_key_is_warned_about_once_and_build_keys_are_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = {
        "$schema": "https://langgra.ph/schema.json",
        "dockerfile_lines": ["RUN true"],
        "graphs": {"g": "./g.py:graph"},
        "encryption": {"path": "./enc.py:encryption"},
        "checkpointer": {"path": "./saver.py:make", "ttl": {"default_ttl": 60}},
        "http": {"mount_prefix": "/api", "disable_ui": True, "disable_mcp": True},
        "colour": "blue",
    }
    with caplog.at_level(logging.INFO):
        project = load_project(
            read_project(write_project(tmp_path, config, {"g.py": GRAPH_FILE.format(var="PATH")}))
        )
    warned = " | ".join(project.warnings)
    for key in ("encryption", "checkpointer.path", "http.mount_prefix"):
        assert sum(w.startswith(f"{key} ") for w in project.warnings) == 1, key
    assert "colour is not a langgraph.json key" in warned
    assert "dockerfile_lines" not in warned
    assert "$schema" not in warned
    assert "image-build keys do not apply" in caplog.text
    assert "disable_ui" not in warned  # honoured: it removes the web page
    assert len(project.warnings) == 4
    assert [r.levelname for r in caplog.records].count("WARNING") == 4


def test_the_repos_own_project_declares_its_graphs_without_warnings() -> None:
    project = load_project(read_project(ROOT / "langgraph.json"))
    assert set(project.graphs) == {"chat", "researcher"}
    assert project.warnings == ()
