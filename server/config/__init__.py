"""langgraph.json, the one source of truth: graphs (every form), env, store, checkpointer, http,
auth. `read_project` parses it, `load_project` imports what it names, `ProjectGraphs` hands out
graphs ready to run."""

from server.config.graphs import AccessContext, Graph, ProjectGraphs
from server.config.project import (
    Project,
    ProjectError,
    ProjectFile,
    apply_env,
    load_project,
    read_project,
)

__all__ = [
    "AccessContext",
    "Graph",
    "Project",
    "ProjectError",
    "ProjectFile",
    "ProjectGraphs",
    "apply_env",
    "load_project",
    "read_project",
]
