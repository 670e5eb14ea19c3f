"""Settings, read once from the environment (and `.env`), validated at startup, then injected."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    """Every knob Switchboard has. Environment variables use the upper-case field name."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    host: str = Field("127.0.0.1", description="Interface the HTTP server binds to.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port of the HTTP server.")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Server processes sharing the port and the PostgreSQL run queue "
        "(`switchboard serve --workers N`); in Qdrant local mode one of them holds Qdrant.",
    )
    http_keep_alive_s: int = Field(
        75,
        ge=1,
        le=3600,
        description="Seconds the HTTP server keeps an idle keep-alive connection open. Keep it "
        "above the idle timeout of clients and proxies (httpx 5 s, nginx and AWS ALB 60 s) so "
        "that they, not the server, close idle connections: a server closing one as a client "
        "sends its next request on it cuts that request (ECONNRESET).",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Log lines as text, or one JSON object per line with the request, run and "
        "thread ids (json).",
    )
    metrics_public: bool = Field(
        False,
        description="Serve /metrics to anyone (a Prometheus on a private network); otherwise "
        "it asks for METRICS_TOKEN or an admin's credentials.",
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="Bearer token a Prometheus scraper sends for /metrics "
        "(`Authorization: Bearer <token>`) instead of a user's key.",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP collector (e.g. http://collector:4318) that receives traces; "
        "unset: spans are made (they feed the metrics) but not exported.",
    )
    otel_service_name: str = Field(
        "switchboard", min_length=1, description="`service.name` of the exported traces."
    )
    data_dir: Path = Field(
        Path(".data"), description="Where embedded services keep their data (postgres/, ...)."
    )
    langgraph_config: Path = Field(
        Path("langgraph.json"),
        description="The LangGraph project to serve: its langgraph.json (graphs, env, store, "
        "checkpointer, http, auth). `switchboard serve --config PATH` overrides it.",
    )

    database_url: str | None = Field(
        None,
        description="PostgreSQL URL. Unset: an embedded PostgreSQL in DATA_DIR/postgres.",
    )
    embedded_postgres_start_s: float = Field(
        120.0,
        gt=0,
        le=3600,
        description="Seconds the embedded PostgreSQL may take to start (waited for, never cut).",
    )
    db_pool_size: int = Field(10, ge=1, le=500, description="Connections kept per process.")
    db_max_overflow: int = Field(10, ge=0, le=500, description="Extra connections under load.")
    db_pool_timeout: float = Field(10.0, gt=0, description="Seconds to wait for a connection.")
    db_connect_timeout_s: float = Field(
        5.0, gt=0, le=300, description="Seconds to open a PostgreSQL connection before giving up."
    )
    db_statement_timeout_s: float = Field(
        30.0, ge=0, le=3600, description="Seconds a PostgreSQL statement may run (0: no limit)."
    )
    migrate_on_start: bool = Field(True, description="Apply migrations when the server starts.")

    qdrant_url: str | None = Field(
        None, description="Qdrant server URL. Unset: qdrant-client local mode in DATA_DIR/qdrant."
    )
    qdrant_api_key: SecretStr | None = Field(None, description="API key of the Qdrant server.")
    mongodb_uri: str | None = Field(
        None, description="MongoDB URI. Unset: an embedded nx-27017 server in DATA_DIR/mongo."
    )
    mongodb_timeout_ms: int = Field(
        2000, ge=100, le=60_000, description="MongoDB connect/server-selection timeout (ms)."
    )
    mongodb_write_retries: int = Field(
        2, ge=0, le=10, description="Retries of a failed memory write before it is reported."
    )
    mongodb_retry_backoff_s: float = Field(
        0.1, ge=0, le=10, description="First backoff between write retries (doubles each time)."
    )
    memory_database: str = Field(
        "switchboard", min_length=1, description="MongoDB database of agent_memory/tool_cache."
    )
    memory_vector_collection: str = Field(
        "memory_vectors", min_length=1, description="Qdrant collection of memory vectors."
    )
    memory_index_fields: list[str] = Field(
        default_factory=lambda: ["text", "content"],
        description='JSON paths of a memory value that get embedded ("$": the whole value); '
        "a value with none of them is embedded whole.",
    )
    memory_default_ttl_minutes: float | None = Field(
        None, gt=0, description="TTL of memories put without one (unset: they never expire)."
    )
    memory_sweep_interval_s: float = Field(
        60.0, gt=0, description="Seconds between purges of expired memories and cache entries."
    )
    memory_extractor: Literal["auto", "offline", "model"] = Field(
        "auto",
        description="Who reads facts out of what users say: auto (the agent's chat model when "
        "it is an OpenAI-compatible one, else the offline grammar), offline or model.",
    )
    memory_recall_k: int = Field(
        3, ge=1, le=20, description="Memories recalled into a turn's prompt at most."
    )
    memory_recall_relative: float = Field(
        0.85,
        ge=0,
        le=1,
        description="A recalled memory scores at least this fraction of the best match's score.",
    )
    memory_recall_min_score: float = Field(
        0.37, ge=-1, le=2, description="Score below which no memory is recalled."
    )
    memory_history_limit: int = Field(
        20, ge=0, le=1000, description="Superseded values kept per memory as its history."
    )
    memory_max_value_bytes: int = Field(
        65_536, ge=256, le=16 * MIB, description="Largest memory/store item value (JSON bytes)."
    )
    memory_max_value_depth: int = Field(
        16, ge=1, le=100, description="Deepest nesting of a memory/store item value."
    )
    embeddings_provider: Literal["minilm", "openai"] = Field(
        "minilm", description="minilm (offline all-MiniLM-L6-v2, 384-d) or openai."
    )
    embeddings_model: str = Field(
        "text-embedding-3-small", description="OpenAI embeddings model (provider openai)."
    )
    embeddings_dimension: int = Field(
        1536, ge=8, le=8192, description="Vector size of the OpenAI embeddings model."
    )
    embeddings_backend: Literal["onnx", "torch"] = Field(
        "onnx",
        description="How MiniLM runs: onnx (exported to DATA_DIR/models at first use; torch "
        "if the export fails) or torch (sentence-transformers).",
    )
    models_dir: Path | None = Field(
        None, description="Where exported embedding models are kept (unset: DATA_DIR/models)."
    )
    embeddings_quantize: bool = Field(
        True, description="Run the ONNX model quantised to int8 (faster; see docs/knowledge.md)."
    )
    embeddings_cache_size: int = Field(
        1024, ge=0, le=1_000_000, description="Query vectors kept in the LRU cache (0: none)."
    )
    embeddings_max_batch: int = Field(
        32, ge=1, le=1024, description="Concurrent queries encoded in one forward pass at most."
    )
    openai_api_key: SecretStr | None = Field(None, description="Key of the OpenAI-compatible API.")
    openai_base_url: str | None = Field(
        None, description="Base URL of an OpenAI-compatible API (Gemini, vLLM, Ollama...)."
    )

    # The agents (issue 5): defaults an agent's own `model` / `config` may override.
    llm_provider: Literal["offline", "openai"] = Field(
        "offline", description="Chat model of agents that name none: offline or openai."
    )
    llm_model: str = Field("gpt-4o-mini", description="Model name for the openai provider.")
    llm_temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature.")
    llm_max_tokens: int | None = Field(None, ge=1, description="Cap on tokens per answer.")
    llm_timeout_s: float = Field(60.0, gt=0, le=600, description="Seconds per model call.")
    llm_max_retries: int = Field(2, ge=0, le=10, description="Retries of a failed model call.")
    offline_token_delay_s: float = Field(
        0.0, ge=0, le=5, description="Pause between the offline model's streamed tokens."
    )
    agent_max_steps: int = Field(4, ge=1, le=50, description="Tool rounds per turn at most.")
    agent_history_window: int = Field(
        12, ge=2, le=200, description="Messages kept in a conversation's checkpointed window."
    )
    agent_tool_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Seconds per tool call; a computing tool's worker process is killed then.",
    )
    tool_processes: int = Field(
        2, ge=1, le=64, description="Worker processes that run computing tools (calculator)."
    )
    tool_memory_mb: int = Field(
        256, ge=64, le=65_536, description="Address space of a tool worker process (MiB)."
    )
    tool_max_output_chars: int = Field(
        20_000, ge=100, le=1_000_000, description="Longest tool result given to the model."
    )
    llm_max_input_chars: int = Field(
        100_000,
        ge=1000,
        le=10_000_000,
        description="Characters one model call is given at most (older messages go first).",
    )
    http_tool_allowed_hosts: list[str] = Field(
        default_factory=list, description="Hosts the http_get tool may fetch (`*.domain` ok)."
    )
    http_tool_max_bytes: int = Field(
        100_000, ge=1, le=16 * MIB, description="Bytes of a response body http_get reads at most."
    )
    http_tool_max_redirects: int = Field(
        3, ge=0, le=10, description="Redirects http_get follows (each one checked again; 0: none)."
    )
    outbound_allowed_ports: list[int] = Field(
        default_factory=lambda: [80, 443],
        description="Ports webhooks and http_get may connect to (allow-listed webhook hosts: any).",
    )
    chat_max_message_chars: int = Field(
        32_000, ge=1, le=1_000_000, description="Longest /chat message; longer ones get 413."
    )
    chat_ping_s: float = Field(10.0, gt=0, le=300, description="SSE heartbeat interval.")
    checkpoint_pool_size: int = Field(
        10, ge=1, le=500, description="psycopg connections for LangGraph checkpoints."
    )
    checkpoint_flush_s: float = Field(
        0.05,
        ge=0,
        le=60,
        description="Seconds a run's checkpoint writes may wait in memory to be sent together "
        "(durability async; a crash loses at most that much of a run's progress).",
    )
    checkpoint_prune_every: int = Field(
        10,
        ge=0,
        le=100_000,
        description="Keep only a conversation's latest checkpoint every N turns (0: never).",
    )
    chat_durability: Literal["sync", "async", "exit"] = Field(
        "async",
        description="When /chat turns write checkpoints: after every step (sync/async) or "
        "once at the end of the turn (exit: fewer writes, no mid-turn progress kept).",
    )
    run_workers: int = Field(
        32,
        ge=0,
        le=256,
        description="Runs this process executes at once, claimed as they are created or from "
        "the queue (0: it only accepts runs).",
    )
    run_admit_lag_s: float = Field(
        0.005,
        ge=0,
        le=1,
        description="How late (seconds, mean over 50 ms) the event loop may come round before "
        "fewer of this process's runs execute their graph at once, so that HTTP requests keep "
        "their turn (0: every run executes at once).",
    )
    run_lease_s: float = Field(
        30.0,
        ge=0.5,
        le=3600,
        description="Seconds a claimed run stays ours without a renewal (a worker that cannot "
        "renew stops its run first).",
    )
    run_poll_s: float = Field(
        2.0, gt=0, le=300, description="Seconds between looks for runs when no NOTIFY arrives."
    )
    run_max_attempts: int = Field(
        5,
        ge=1,
        le=100,
        description="Claims of one run at most (crashes, database outages) before it ends as "
        "an error.",
    )
    run_timeout_s: float | None = Field(
        None, gt=0, description="Seconds a run attempt may take before it ends as `timeout`."
    )
    sse_heartbeat_s: float = Field(
        5.0, gt=0, le=300, description="Seconds between `: heartbeat` comments of run streams."
    )
    run_events_poll_s: float = Field(
        1.0, gt=0, le=60, description="Seconds a stream follower waits before re-reading events."
    )
    run_events_retention_s: float = Field(
        3600.0, ge=0, description="Seconds a finished run's events are kept for stream rejoins."
    )
    run_events_prune_every_s: float = Field(
        300.0, gt=0, le=86_400, description="Seconds between prunes of old run events."
    )
    run_events_hold_s: float = Field(
        0.05,
        ge=0,
        le=10,
        description="Seconds the events of a run nobody follows in this process may wait to be "
        "stored with its finish (0: each stored at once; followers elsewhere see them that late).",
    )

    knowledge_default_collection: str = Field(
        "knowledge",
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$",
        description="Knowledge base that uploads and searches use when none is named.",
    )
    chunk_size: int = Field(
        128,
        ge=32,
        le=8192,
        description="Embedder tokens per chunk, title and heading path included (MiniLM reads "
        "254 at most: larger values are capped).",
    )
    max_upload_bytes: int = Field(
        20 * MIB, ge=1024, description="Largest document upload accepted; bigger ones get 413."
    )
    ingest_samples_on_start: bool = Field(
        True, description="Ingest the bundled sample documents when the knowledge base is empty."
    )

    max_body_bytes: int = Field(
        MIB, ge=1024, description="Largest request body accepted; bigger bodies get 413."
    )
    cors_origins: list[str] = Field(
        default_factory=lambda: ["https://smith.langchain.com"],
        description="Origins allowed by CORS (LangGraph Studio's by default).",
    )
    allow_private_network: bool = Field(
        True,
        description="Answer a CORS preflight's `Access-Control-Request-Private-Network` with "
        "`Access-Control-Allow-Private-Network: true` for CORS-allowed origins only, so Chrome "
        "lets Studio's public page reach a server on loopback or a private network (as "
        "`langgraph dev` does); `false` refuses such preflights.",
    )
    webhook_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Webhook hosts allowed even on loopback/private addresses (`*.domain` ok).",
    )
    webhook_timeout_s: float = Field(10.0, gt=0, le=120, description="Seconds per webhook POST.")
    webhook_attempts: int = Field(3, ge=1, le=10, description="Webhook POST attempts at most.")
    cron_poll_interval_s: float = Field(
        5.0, gt=0, le=300, description="Seconds between checks for due crons (0.x in tests)."
    )

    # Identity and ownership (docs/auth.md).
    auth: Literal["auto", "builtin", "none"] = Field(
        "auto",
        description="Who may call: auto (langgraph.json's auth.path if set, else the built-in "
        "API keys/JWT when a key exists or a JWT setting is set, else open on loopback only), "
        "builtin, or none (open, even on a public HOST).",
    )
    auth_jwt_secret: SecretStr | None = Field(
        None, description="HS256 secret that signs the JWT bearer tokens the server accepts."
    )
    auth_jwks_url: str | None = Field(
        None, description="JWKS URL of the identity provider whose JWTs (RS256/ES256) it accepts."
    )
    auth_jwt_algorithms: list[str] | None = Field(
        None,
        description="JWT algorithms accepted (unset: HS256 with a secret, RS256 and ES256 with "
        "a JWKS URL).",
    )
    auth_jwt_audience: str | None = Field(None, description="Required `aud` of JWTs (unset: any).")
    auth_jwt_issuer: str | None = Field(None, description="Required `iss` of JWTs (unset: any).")
    auth_jwt_identity_claim: str = Field(
        "sub", min_length=1, description="JWT claim holding the caller's identity."
    )
    auth_jwt_permissions_claim: str = Field(
        "permissions",
        min_length=1,
        description="JWT claim holding the caller's permissions (`admin` sees everything).",
    )
    auth_cache_s: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="Seconds a verified API key is trusted before it is checked again "
        "(a revoked key stops working within this time; 0: every request).",
    )
    auth_studio_on_loopback: bool = Field(
        False,
        description="Let LangGraph Studio's origin in without a key while HOST is loopback "
        "(as `langgraph dev` does); it acts as Studio's user, who sees everything.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "localhost", "::1"],
        description="Host header values the server answers (`*.domain` ok, `*`: any); others "
        "get 400 (DNS rebinding).",
    )
    runs_per_minute: int = Field(
        60,
        ge=0,
        le=1_000_000,
        description="Runs (and /chat turns) one identity may create per minute (0: no limit); "
        "more get 429 with Retry-After.",
    )
    runs_in_flight_per_user: int = Field(
        10,
        ge=0,
        le=100_000,
        description="Pending and running runs one identity may have at once (0: no limit).",
    )
    cron_min_interval_s: float = Field(
        60.0,
        ge=1,
        le=86_400,
        description="Shortest time between two firings of a cron's schedule (faster: 422).",
    )
    crons_per_user: int = Field(
        100, ge=0, le=1_000_000, description="Crons one identity may have (0: no limit)."
    )

    @field_validator("outbound_allowed_ports")
    @classmethod
    def _check_ports(cls, value: list[int]) -> list[int]:
        bad = [port for port in value if not 1 <= port <= 65535]
        if bad:
            raise ValueError(f"OUTBOUND_ALLOWED_PORTS holds ports outside 1-65535: {bad}")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        scheme = value.split("://", 1)[0]
        if scheme not in {"postgresql", "postgres", "postgresql+psycopg"}:
            raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got scheme {scheme!r}")
        return value


def get_settings() -> Settings:
    """Read the settings from the environment; raises `ValidationError` naming bad variables."""
    return Settings()


def settings_problems(error: ValidationError) -> str:
    """What is wrong with the settings, one variable a line, without the values given (a bad
    DATABASE_URL or AUTH_JWT_SECRET must not end up on a terminal or in a log)."""
    return "\n".join(
        f"  {'.'.join(str(part) for part in problem['loc']).upper() or 'SETTINGS'}: "
        f"{problem['msg']}"
        for problem in error.errors(include_input=False, include_url=False)
    )


def load_settings() -> Settings:
    """The settings of a command; invalid ones stop it with `settings_problems`."""
    try:
        return Settings()
    except ValidationError as error:
        raise SystemExit(f"invalid settings:\n{settings_problems(error)}") from error
