"""Load a LangGraph project: read langgraph.json, apply its env, put its folder on `sys.path`,
import its graphs, store embed function, custom app and auth, and say what is not supported.

Paths in the file are relative to the file's folder. A failure stops startup with one
`ProjectError` naming what failed (graph id, path, error); its traceback goes to the debug log.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from langgraph.graph import StateGraph
from langgraph.pregel import Pregel
from langgraph_sdk import Auth
from pydantic import ValidationError
from starlette.applications import Starlette

from server.config.graphs import GraphEntry, graph_entry
from server.config.schema import HttpConfig, LanggraphConfig, ThreadTTLConfig, unsupported_keys
from server.config.store import StoreConfigError, StoreSetup, store_setup
from stores.sql.threads import ThreadTTL

log = logging.getLogger(__name__)

MAX_CONFIG_BYTES = 1024 * 1024
_REQUIREMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


class ProjectError(Exception):
    """The project cannot be served; the message says which key, which path and why."""


@dataclass(frozen=True, slots=True)
class ProjectFile:
    """A parsed and validated langgraph.json; nothing of the project is imported yet."""

    path: Path
    config: LanggraphConfig

    @property
    def root(self) -> Path:
        """The project folder: paths in the file are relative to it."""
        return self.path.parent


def read_project(path: Path | str) -> ProjectFile:
    """Parse and validate langgraph.json at `path` (nothing is imported).

    Raises:
        ProjectError: the file is missing, too large, not JSON, or a key has a bad value.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ProjectError(
            f"{path}: no langgraph.json there; give the project's file with "
            "`switchboard serve --config PATH` or the LANGGRAPH_CONFIG setting"
        )
    path = path.resolve()
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ProjectError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProjectError(f"{path}: not valid JSON: {error}") from error
    if not isinstance(raw, dict):
        raise ProjectError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    try:
        config = LanggraphConfig.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in error.errors()
        )
        raise ProjectError(f"{path}: {problems}") from error
    return ProjectFile(path=path, config=config)


def project_env(project: ProjectFile) -> dict[str, str]:
    """The variables of `env`: its mapping, or the KEY=VALUE lines of the .env file it names."""
    env = project.config.env
    if env is None:
        return {}
    if isinstance(env, dict):
        return dict(env)
    env_path = project.root / env
    if not env_path.is_file():
        raise ProjectError(f"{project.path}: env file {env!r} not found at {env_path}")
    return {k: v for k, v in dotenv_values(env_path).items() if v is not None}


def apply_env(project: ProjectFile) -> list[str]:
    """Set the project's `env` in the process environment before anything is imported.

    Variables the process environment already has win (as they win over `.env`), so a
    deployment can override the project's values. Returns the names that were set.
    """
    applied = []
    for name, value in project_env(project).items():
        if name not in os.environ:
            os.environ[name] = value
            applied.append(name)
    return applied


def add_to_sys_path(project: ProjectFile) -> list[str]:
    """Put the project folder and its local `dependencies` on `sys.path` (as `langgraph dev`
    does for `"dependencies": ["."]`); returns warnings about dependencies that are missing."""
    warnings = []
    folders = [project.root]
    for dep in project.config.dependencies:
        if dep.startswith((".", "/")):
            folder = (project.root / dep).resolve()
            if folder.is_dir():
                folders.append(folder)
            else:
                warnings.append(f"dependencies: {dep!r} is not a folder at {folder}")
            continue
        match = _REQUIREMENT_NAME.match(dep)
        if match is None or "://" in dep:
            warnings.append(f"dependencies: {dep!r} cannot be checked; install it yourself")
            continue
        try:
            distribution(match.group(0))
        except PackageNotFoundError:
            warnings.append(
                f"dependencies: {dep!r} is not installed; install it into this environment "
                f"(pip install '{dep}')"
            )
    for folder in folders:
        if str(folder) not in sys.path:
            sys.path.append(str(folder))
    return warnings


def _module_name(file_ref: str) -> str:
    """The module name of a graph file, derived from its path as langgraph-api derives it."""
    return file_ref.replace("/", "__").replace(".py", "").replace(" ", "_").lstrip(".")


def import_object(ref: str, *, root: Path) -> Any:
    """The variable `ref` names: `./file.py:variable` (relative to `root`) or
    `package.module:variable`."""
    module_ref, sep, attr = ref.rpartition(":")
    if not sep or not module_ref or not attr:
        raise ValueError(
            f"{ref!r} names no variable; write './file.py:variable' or 'package.module:variable'"
        )
    if module_ref.endswith(".py") or "/" in module_ref:
        file = (root / module_ref).resolve()
        if not file.is_file():
            raise FileNotFoundError(f"no file {file}")
        name = _module_name(module_ref)
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
    else:
        module = importlib.import_module(module_ref)
    try:
        return getattr(module, attr)
    except AttributeError:
        graphs = [k for k, v in vars(module).items() if isinstance(v, Pregel | StateGraph)]
        hint = f" (graphs there: {', '.join(sorted(graphs))})" if graphs else ""
        raise AttributeError(f"{module_ref} has no variable {attr!r}{hint}") from None


def _load(what: str, ref: str, root: Path, check: Any = None) -> Any:
    """Import `ref` for key `what`; any failure becomes one `ProjectError` line."""
    try:
        obj = import_object(ref, root=root)
        return check(obj) if check is not None else obj
    except Exception as error:
        log.debug("loading %s (%s) failed", what, ref, exc_info=True)
        raise ProjectError(
            f"{what} ({ref}) failed to load: {type(error).__name__}: {error}"
        ) from error


def _starlette_app(obj: Any) -> Starlette:
    if not isinstance(obj, Starlette):
        raise TypeError(f"it is a {type(obj).__name__}, not a Starlette or FastAPI app")
    return obj


def _auth(obj: Any) -> Auth:
    if not isinstance(obj, Auth):
        raise TypeError(f"it is a {type(obj).__name__}, not a langgraph_sdk.Auth")
    return obj


@dataclass(frozen=True, slots=True)
class Project:
    """A loaded project: what the server serves, as langgraph.json declares it."""

    file: ProjectFile
    graphs: dict[str, GraphEntry]
    store: StoreSetup
    http: HttpConfig
    custom_app: Starlette | None = None
    auth: Auth | None = None  # enforced by server/auth
    warnings: tuple[str, ...] = field(default=())

    @property
    def thread_ttl(self) -> ThreadTTLConfig | None:
        """`checkpointer.ttl`: the default TTL of new threads and the sweep's strategy."""
        checkpointer = self.file.config.checkpointer
        return checkpointer.ttl if checkpointer is not None else None

    def default_thread_ttl(self) -> ThreadTTL | None:
        """The TTL a new thread gets when its request sets none (`checkpointer.ttl`)."""
        ttl = self.thread_ttl
        if ttl is None or ttl.default_ttl is None:
            return None
        return ThreadTTL(ttl.strategy, ttl.default_ttl)


def load_project(project: ProjectFile) -> Project:
    """Apply `env`, extend `sys.path`, and import every graph, the store's embed function, the
    custom app and the auth object; log a warning for each key that is not supported.

    Raises:
        ProjectError: something failed to import or is not what its key needs.
    """
    config = project.config
    root = project.root
    apply_env(project)
    warnings = add_to_sys_path(project)
    entries: dict[str, GraphEntry] = {}
    for graph_id, spec in config.graphs.items():
        path = spec if isinstance(spec, str) else spec.path
        description = None if isinstance(spec, str) else spec.description
        entries[graph_id] = _load(
            f"graph {graph_id!r}",
            path,
            root,
            lambda obj, g=graph_id, p=path, d=description: graph_entry(g, p, d, obj),
        )
    try:
        store = store_setup(config.store, import_embed=lambda ref: import_object(ref, root=root))
    except StoreConfigError as error:
        raise ProjectError(f"{project.path}: {error}") from error
    http = config.http or HttpConfig()
    custom_app = _load("http.app", http.app, root, _starlette_app) if http.app else None
    auth = None
    if config.auth is not None and config.auth.path:
        auth = _load("auth.path", config.auth.path, root, _auth)
    unsupported, not_applicable = unsupported_keys(config)
    warnings.extend(unsupported)
    if (
        config.python_version
        and config.python_version != f"{sys.version_info[0]}.{sys.version_info[1]}"
    ):
        warnings.append(
            f"python_version is {config.python_version}, but the server runs Python "
            f"{sys.version_info[0]}.{sys.version_info[1]}"
        )
    for warning in warnings:
        log.warning("%s: %s", project.path.name, warning)
    if not_applicable:
        log.info(
            "%s: image-build keys do not apply to `switchboard serve`: %s",
            project.path.name,
            ", ".join(not_applicable),
        )
    return Project(
        file=project,
        graphs=entries,
        store=store,
        http=http,
        custom_app=custom_app,
        auth=auth,
        warnings=tuple(warnings),
    )
