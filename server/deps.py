"""FastAPI dependencies as `Annotated` aliases: the resources a route may ask for.

They are `async def` on purpose: FastAPI runs a plain `def` dependency in a worker thread, a
thread hop (and GIL hand-over) per dependency per request for what is an attribute read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request

from server.auth.caller import Caller, caller_of
from server.config import Project, ProjectGraphs
from server.resources import Resources
from server.runs.engine import RunEngine
from server.runs.events import RunEventLog
from stores.knowledge import KnowledgeBase
from stores.memory.operations import MAX_OFFSET
from stores.sql.database import Database


async def get_resources(request: Request) -> Resources:
    """The process's resources, opened by the lifespan."""
    resources: Resources = request.app.state.resources
    return resources


async def get_database(request: Request) -> Database:
    """The SQL database."""
    resources: Resources = request.app.state.resources
    return resources.database


async def get_run_events(request: Request) -> RunEventLog:
    """The run event log (stream replay and cross-process follow), opened by the lifespan."""
    events: RunEventLog = request.app.state.run_events
    return events


async def get_engine(request: Request) -> RunEngine:
    """The run engine (durable runs, shared with other processes), opened by the lifespan."""
    engine: RunEngine = request.app.state.runs
    return engine


async def get_project(request: Request) -> Project:
    """The LangGraph project served (langgraph.json as loaded)."""
    project: Project = request.app.state.project
    return project


async def get_graphs(request: Request) -> ProjectGraphs:
    """The project's graphs, handed out ready to run (`acquire`)."""
    graphs: ProjectGraphs = request.app.state.graphs
    return graphs


async def get_knowledge(request: Request) -> KnowledgeBase:
    """The knowledge base (documents and semantic search)."""
    resources: Resources = request.app.state.resources
    return resources.knowledge


@dataclass(frozen=True, slots=True)
class RunServices:
    """What the routes that create and follow runs use, as one dependency: FastAPI solves each
    dependency of a request on its own (~8 µs each), and these routes asked for four or five
    on every run."""

    resources: Resources
    engine: RunEngine
    events: RunEventLog
    caller: Caller

    @property
    def db(self) -> Database:
        """The SQL database."""
        return self.resources.database


async def get_run_services(request: Request) -> RunServices:
    """The resources, run engine, event log and caller of a request to the run routes.

    Raises:
        AuthError: 401 when the request has no caller (as `CallerDep`).
    """
    state = request.app.state
    return RunServices(state.resources, state.runs, state.run_events, caller_of(request.scope))


ResourcesDep = Annotated[Resources, Depends(get_resources)]
KnowledgeDep = Annotated[KnowledgeBase, Depends(get_knowledge)]
DatabaseDep = Annotated[Database, Depends(get_database)]
RunEventsDep = Annotated[RunEventLog, Depends(get_run_events)]
EngineDep = Annotated[RunEngine, Depends(get_engine)]
ProjectDep = Annotated[Project, Depends(get_project)]
GraphsDep = Annotated[ProjectGraphs, Depends(get_graphs)]
RunServicesDep = Annotated[RunServices, Depends(get_run_services)]
Limit = Annotated[int, Query(ge=1, le=200, description="Items per page (1-200).")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip.")]
