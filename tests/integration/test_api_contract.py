"""The OpenAPI document is the contract: schemathesis generates requests for every operation of
the server's own /openapi.json (streams, joins and waits included) and checks each answer.

Checks: no server error, the status code is documented, the content type is documented, the
body matches the documented schema. Afterwards, no operation may reject (4xx other than 404)
all the data its own schema calls valid: that is schemathesis' "schema validation mismatch".

`CONTRACT_BASE_URL` points the same test at a deployed server (with `CONTRACT_API_KEY` sent as
`X-Api-Key`); otherwise the module starts a real server on a scratch PostgreSQL database.
`CONTRACT_MAX_EXAMPLES` sets how many cases each operation gets (default 12: about three
minutes for the whole document on two cores).
"""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from server.app import create_app
from tests.support import make_settings, running_server

MAX_EXAMPLES = int(os.environ.get("CONTRACT_MAX_EXAMPLES", "12"))
# The client's total budget for one request: streams of generated runs end at once (their
# thread or assistant does not exist) or within seconds (the offline model), so a request
# still open after this is a hang, and fails the test.
REQUEST_TIMEOUT_S = 20
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Operation label -> status codes answered to positive (schema-valid) cases, and the last
# refusal (not 404) of one, to show what the schema failed to say.
POSITIVE_STATUSES: dict[str, list[int]] = defaultdict(list)
LAST_REFUSAL: dict[str, str] = {}


@pytest.fixture(scope="module")
def contract_url(database_url: str, data_dir: Path) -> Iterator[str]:
    """`CONTRACT_BASE_URL`, else a real server on this module's database. Its per-identity
    run limit is lifted: generated run bursts test validation, not the limiter."""
    deployed = os.environ.get("CONTRACT_BASE_URL")
    if deployed:
        yield deployed.rstrip("/")
        return
    server_settings = make_settings(
        database_url,
        data_dir,
        migrate_on_start=False,
        runs_per_minute=0,
        runs_in_flight_per_user=0,
    )
    with running_server(server_settings) as url:
        yield url


def _headers() -> dict[str, str]:
    key = os.environ.get("CONTRACT_API_KEY")
    return {"X-Api-Key": key} if key else {}


def _load_schema() -> Any:
    """The document under test: the deployed server's /openapi.json, or the one the app
    serves with the test server's settings (checked equal to the live one below)."""
    deployed = os.environ.get("CONTRACT_BASE_URL")
    if deployed:
        return schemathesis.openapi.from_url(
            f"{deployed.rstrip('/')}/openapi.json", headers=_headers(), timeout=60
        )
    return schemathesis.openapi.from_dict(_app_document())


def _app_document() -> dict[str, Any]:
    unused = "postgresql://unused@127.0.0.1:1/unused"
    app = create_app(make_settings(unused, Path(tempfile.gettempdir()) / "sb-contract"))
    return app.openapi()


schema = _load_schema()


def test_the_live_server_serves_the_document_under_test(contract_url: str) -> None:
    if os.environ.get("CONTRACT_BASE_URL"):
        pytest.skip("the document was read from the deployed server")
    served = requests.get(f"{contract_url}/openapi.json", timeout=60).json()
    assert served == _app_document()


@pytest.mark.timeout(300)
@schema.parametrize()  # type: ignore[untyped-decorator]
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_operation_keeps_its_contract(case: schemathesis.Case, contract_url: str) -> None:
    """No 5xx; status, content type and body are the documented ones."""
    # Sent exactly as schemathesis' command line sends them: file parts without a filename,
    # with the encoding's whole content-type list as their Content-Type.
    response = case.call_and_validate(
        base_url=contract_url,
        headers=_headers(),
        checks=CHECKS,
        timeout=REQUEST_TIMEOUT_S,
    )
    meta = case.meta
    if meta is not None and meta.generation.mode == GenerationMode.POSITIVE:
        label = f"{case.operation.method.upper()} {case.operation.path}"
        POSITIVE_STATUSES[label].append(response.status_code)
        if 400 <= response.status_code < 500 and response.status_code != 404:
            LAST_REFUSAL[label] = f"{response.status_code} {response.text[:300]}"


def rejects_its_own_valid_data(statuses: list[int]) -> bool:
    """schemathesis' rule for "schema validation mismatch": every schema-valid case was
    refused with a 4xx, and at least a tenth of them not for a missing record or auth."""
    if not statuses or not all(400 <= s < 500 for s in statuses):
        return False
    other = [s for s in statuses if s not in (401, 403, 404)]
    return len(other) / len(statuses) >= 0.1


def test_rejects_its_own_valid_data_follows_schemathesis() -> None:
    assert rejects_its_own_valid_data([422, 422, 404])
    assert not rejects_its_own_valid_data([422, 200])
    assert not rejects_its_own_valid_data([404] * 20)
    assert not rejects_its_own_valid_data([])


def test_no_operation_rejects_the_data_its_schema_allows() -> None:
    """Runs after the operations above (file order): their positive cases' statuses."""
    if not POSITIVE_STATUSES:
        pytest.skip("the contract test of the operations did not run in this session")
    mismatched = {
        label: (sorted(set(statuses)), LAST_REFUSAL.get(label))
        for label, statuses in POSITIVE_STATUSES.items()
        if rejects_its_own_valid_data(statuses)
    }
    assert not mismatched, f"schema looser than validation: {mismatched}"
