"""The FastAPI application: lifespan (owns every client), middleware, error handlers, routes."""

from __future__ import annotations

import gc
import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.routing import Match

from nodes.context import default_tools
from server.agent_api import assistants as agent_assistants
from server.agent_api import crons as agent_crons
from server.agent_api import meta as agent_meta
from server.agent_api import runs as agent_runs
from server.agent_api import store as agent_store
from server.agent_api import threads as agent_threads
from server.agent_api.meta import TextPlainJSONMiddleware
from server.auth.middleware import Authentication, BrowserGuard
from server.auth.setup import describe, resolve_auth
from server.chat_api.transcript import SOURCE as CHAT_SOURCE
from server.chat_api.transcript import transcript_recorder
from server.config import Project, ProjectGraphs, load_project, read_project
from server.config.http import CORS, CustomRoutes, cors_options, mount_custom_app
from server.errors import install_error_handlers
from server.gc_pauses import quiet_full_collections
from server.limits import BodyLimitMiddleware
from server.openapi import declare_graph_ids
from server.protocols.a2a import build_dispatcher
from server.protocols.mcp import open_mcp
from server.resources import open_resources
from server.retention import open_retention
from server.route_index import index_routes
from server.routes import agents, chat, conversations, documents, health, memory, metrics, users
from server.routes.protocols import install_protocols
from server.runs.engine import open_run_engine
from server.runs.events import open_run_events
from server.samples import sample_ingest
from server.schemas.common import COMMON_ERRORS
from server.settings import Settings
from server.telemetry.http import RequestTelemetry
from server.telemetry.logs import configure_logging
from server.telemetry.metrics import process_exited
from server.telemetry.tracing import install_tracing
from server.web import install_web
from stores.sql.assistants import ensure_system_assistants
from stores.sql.collections import ensure_system_collection

log = logging.getLogger(__name__)


# FastAPI >= 0.16x makes its own request spans once an OpenTelemetry SDK is set up; ours
# (server/telemetry/http.py) carry the request id and feed the metrics, so theirs are off.
_NO_NATIVE_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


def create_app(settings: Settings, *, project: Project | None = None) -> FastAPI:
    """Build the app for `project` (default: the langgraph.json of LANGGRAPH_CONFIG, loaded
    now, so a graph that fails to import stops here); connections open when it starts."""
    if project is None:
        project = load_project(read_project(settings.langgraph_config))
    http = project.http
    install_tracing(
        service_name=settings.otel_service_name, otlp_endpoint=settings.otel_exporter_otlp_endpoint
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            resources = await stack.enter_async_context(
                open_resources(settings, store=project.store)
            )
            # Who may call: decided before anything is served (a public HOST without auth
            # stops here, naming the settings).
            auth = await resolve_auth(settings, project, resources.database)
            # The default collection (and the samples in it) is the server's: read by all.
            await ensure_system_collection(
                resources.database, settings.knowledge_default_collection
            )
            await stack.enter_async_context(sample_ingest(resources))
            graphs = ProjectGraphs(
                project.graphs,
                checkpointer=resources.checkpoints.saver,
                store=resources.memory,
            )
            run_events = await stack.enter_async_context(open_run_events(resources))
            runs = await stack.enter_async_context(
                open_run_engine(
                    resources,
                    events=run_events,
                    graphs=graphs,
                    recorders={
                        CHAT_SOURCE: transcript_recorder(
                            checkpoints=resources.checkpoints,
                            prune_every=settings.checkpoint_prune_every,
                        )
                    },
                    send_webhooks=not http.disable_webhooks,
                    default_thread_ttl=project.default_thread_ttl(),
                )
            )
            crons = await stack.enter_async_context(
                agent_crons.open_crons(
                    runs,
                    poll_interval_s=settings.cron_poll_interval_s,
                    authorizer=auth.authorizer,
                )
            )
            mcp = await stack.enter_async_context(open_mcp(runs, settings))
            await stack.enter_async_context(open_retention(resources, runs, project))
            app.state.resources = resources
            app.state.run_events = run_events
            app.state.runs = runs
            app.state.graphs = graphs
            app.state.mcp = mcp
            app.state.a2a = build_dispatcher(runs, run_events, settings)
            await ensure_system_assistants(
                resources.database,
                graphs.system_assistants(),
                tools={g: default_tools(graph) for g, graph in graphs.compiled().items()},
            )
            app.state.cron_scheduler = crons
            app.state.auth = auth
            if project.custom_app is not None:
                custom = project.custom_app
                await stack.enter_async_context(custom.router.lifespan_context(custom))
            log.info(
                "Switchboard ready on http://%s:%s (API docs at /docs); project %s (graphs: "
                "%s); database: %s",
                settings.host,
                settings.port,
                project.file.path,
                ", ".join(graphs.declared()),
                resources.database_kind,
            )
            (log.warning if auth.mode == "open" else log.info)(
                "Switchboard %s", describe(auth, settings)
            )
            stack.callback(process_exited)
            # What startup made (modules, graphs, clients) lives as long as the app: out of the
            # cyclic collector's way. Each full collection traversed it all (~440k objects for
            # the bench's graph): a 0.4-0.6 s pause of every request and run on this loop, every
            # few seconds under load (docs/runs.md). Given back at shutdown, so a process that
            # serves apps one after another (the tests) still collects the old ones.
            gc.freeze()
            stack.callback(gc.unfreeze)
            # And later full collections wait for a moment when no run executes (docs/runs.md).
            await stack.enter_async_context(quiet_full_collections(lambda: runs.admission.idle))
            yield

    meta_urls = {} if not http.disable_meta else {"docs_url": None, "redoc_url": None}
    app = FastAPI(
        title="Switchboard",
        summary="Graph-orchestrated AI agents served over JSON and SSE.",
        version="0.1.0",
        lifespan=lifespan,
        responses=COMMON_ERRORS,
        openapi_url=None if http.disable_meta else "/openapi.json",
        **meta_urls,  # type: ignore[arg-type]
        **_NO_NATIVE_TELEMETRY,
    )
    app.state.project = project
    # Middleware, innermost first: a body is read as JSON, bounded, after its caller is known;
    # CORS answers preflights and labels every answer; the guard sees each request first, right
    # after the request id is given.
    app.add_middleware(TextPlainJSONMiddleware)
    app.add_middleware(
        BodyLimitMiddleware,
        default_limit=settings.max_body_bytes,
        # Uploads may be as large as MAX_UPLOAD_BYTES plus room for the multipart framing.
        limit_for_path=lambda path: (
            settings.max_upload_bytes + 64 * 1024 if path.startswith("/documents") else None
        ),
    )
    custom = CustomRoutes(project.custom_app) if project.custom_app is not None else None
    scrapers_only = settings.metrics_public or settings.metrics_token is not None
    app.add_middleware(
        Authentication,
        custom_route=lambda scope: custom is not None and custom.matches(scope)[0] != Match.NONE,
        # /metrics checks METRICS_TOKEN itself (or is public): no user credentials asked.
        public_paths=frozenset({"/metrics"}) if scrapers_only else frozenset(),
    )
    cors = cors_options(http, settings)
    app.add_middleware(CORS, **cors)
    app.add_middleware(
        BrowserGuard,
        allowed_hosts=settings.allowed_hosts,
        origin_allowed=CORS(app=app, **cors).is_allowed_origin,
    )
    # Outermost, before anything can answer: the request id, the span and the HTTP metrics of
    # every request, refused ones included.
    app.add_middleware(RequestTelemetry)
    install_error_handlers(app)
    # Routes match in order: /ok and the docs, then the project's custom routes, then the API.
    app.include_router(agent_meta.ok_router)
    if project.custom_app is not None:
        mount_custom_app(app, project.custom_app)
    for module in (health, metrics, users, agents, conversations, documents, memory, chat):
        app.include_router(module.router)
    # The Agent Server API, route group by route group, as langgraph.json's http.disable_* say.
    if not http.disable_runs:
        app.include_router(agent_runs.router)
        app.include_router(agent_crons.router)
    if not http.disable_assistants:
        app.include_router(agent_assistants.router)
    if not http.disable_threads:
        app.include_router(agent_threads.router)
    if not http.disable_store:
        app.include_router(agent_store.router)
    if not http.disable_meta:
        app.include_router(agent_meta.router)
    install_protocols(app, mcp=not http.disable_mcp, a2a=not http.disable_a2a)
    if not http.disable_ui:
        install_web(app)
    declare_graph_ids(app, list(project.graphs))
    index_routes(app)  # last: every route is in
    return app


def create_worker_app() -> FastAPI:
    """The app of one `switchboard serve --workers N` process (uvicorn's factory): settings
    and the project from the environment the serving process prepared."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
