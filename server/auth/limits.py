"""Who a new run executes as, and the per-identity limits it passes first: runs per minute
(429 with Retry-After), runs in flight (checked where the run is written), crons."""

from __future__ import annotations

from server.auth.caller import Caller
from server.auth.collections import readable_collections
from server.settings import Settings
from stores.sql.database import Database
from stores.sql.filters import Filter
from stores.sql.quotas import take_run_token
from stores.sql.runs import RunCreator


async def run_creator(
    caller: Caller, db: Database, settings: Settings, *, access: Filter | None
) -> RunCreator:
    """The creator of a run the caller asks for: counted against RUNS_PER_MINUTE now (429
    when over), capped at RUNS_IN_FLIGHT_PER_USER when written, executing as the caller with
    the knowledge collections they may read; its thread must satisfy `access`.

    Raises:
        LimitError: over RUNS_PER_MINUTE.
    """
    identity = caller.identity
    if identity is None:
        return RunCreator(access=access)
    await take_run_token(db, identity, per_minute=settings.runs_per_minute)
    return RunCreator(
        user_id=identity,
        auth=caller.run_auth(collections=await readable_collections(caller, db)),
        access=access,
        max_in_flight=settings.runs_in_flight_per_user,
    )
