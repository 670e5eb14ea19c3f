"""The FastAPI application: lifespan (owns every client), middleware, error handlers, routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from nodes.context import default_tools
from server.agent_api import assistants as agent_assistants
from server.agent_api import crons as agent_crons
from server.agent_api import meta as agent_meta
from server.agent_api import runs as agent_runs
from server.agent_api import store as agent_store
from server.agent_api import threads as agent_threads
from server.agent_api.meta import TextPlainJSONMiddleware
from server.chat_api.transcript import SOURCE as CHAT_SOURCE
from server.chat_api.transcript import transcript_recorder
from server.errors import install_error_handlers
from server.limits import BodyLimitMiddleware
from server.protocols.a2a import build_dispatcher
from server.protocols.mcp import open_mcp
from server.resources import open_resources
from server.routes import agents, chat, conversations, documents, health, memory, users
from server.routes.protocols import install_protocols
from server.runs.engine import open_run_engine
from server.runs.events import open_run_events
from server.samples import sample_ingest
from server.settings import Settings
from server.web import install_web
from stores.sql.assistants import ensure_system_assistants

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    """Build the app; connections open when it starts and close when it stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            open_resources(settings) as resources,
            sample_ingest(resources),
            open_run_events(resources) as run_events,
            open_run_engine(
                resources,
                events=run_events,
                recorders={
                    CHAT_SOURCE: transcript_recorder(
                        checkpoints=resources.checkpoints,
                        prune_every=settings.checkpoint_prune_every,
                    )
                },
            ) as runs,
            agent_crons.open_crons(runs, poll_interval_s=settings.cron_poll_interval_s) as crons,
            open_mcp(runs, settings) as mcp,
        ):
            app.state.resources = resources
            app.state.run_events = run_events
            app.state.runs = runs
            app.state.mcp = mcp
            app.state.a2a = build_dispatcher(runs, run_events, settings)
            await ensure_system_assistants(
                resources.database,
                runs.graphs,
                tools={graph_id: default_tools(g) for graph_id, g in runs.graphs.items()},
            )
            app.state.cron_scheduler = crons
            log.info(
                "Switchboard ready on http://%s:%s (API docs at /docs); database: %s",
                settings.host,
                settings.port,
                resources.database_kind,
            )
            yield

    app = FastAPI(
        title="Switchboard",
        summary="Graph-orchestrated AI agents served over JSON and SSE.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["Location", "Content-Location", "X-Pagination-Total", "X-Pagination-Next"],
    )
    app.add_middleware(
        BodyLimitMiddleware,
        default_limit=settings.max_body_bytes,
        # Uploads may be as large as MAX_UPLOAD_BYTES plus room for the multipart framing.
        limit_for_path=lambda path: (
            settings.max_upload_bytes + 64 * 1024 if path.startswith("/documents") else None
        ),
    )
    app.add_middleware(TextPlainJSONMiddleware)
    install_error_handlers(app)
    for module in (health, users, agents, conversations, documents, memory, chat):
        app.include_router(module.router)
    app.include_router(agent_runs.router)
    app.include_router(agent_crons.router)
    for api in (agent_assistants, agent_threads, agent_store, agent_meta):
        app.include_router(api.router)
    install_protocols(app)
    install_web(app)
    return app
