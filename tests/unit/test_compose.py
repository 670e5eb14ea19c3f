"""compose.yaml and the Dockerfile describe the production parts (Docker cannot run here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def test_compose_runs_the_four_parts_with_healthchecks() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "qdrant", "mongo", "server"}
    for name, service in services.items():
        assert "healthcheck" in service, name
        assert service["healthcheck"]["test"], name
    assert "pgvector" in services["postgres"]["image"]
    assert services["qdrant"]["image"].startswith("qdrant/qdrant")
    assert services["mongo"]["image"].startswith("mongo:")


def test_compose_keeps_data_in_named_volumes() -> None:
    compose = _compose()
    declared = set(compose["volumes"])
    for name in ("postgres", "qdrant", "mongo", "server"):
        mounts = compose["services"][name]["volumes"]
        volume = mounts[0].split(":")[0]
        assert volume in declared, name


def test_server_waits_for_healthy_dependencies_and_points_at_them() -> None:
    server = _compose()["services"]["server"]
    assert server["build"]["dockerfile"] == "Dockerfile"
    assert (ROOT / server["build"]["dockerfile"]).is_file()
    assert {k: v["condition"] for k, v in server["depends_on"].items()} == {
        "postgres": "service_healthy",
        "qdrant": "service_healthy",
        "mongo": "service_healthy",
    }
    env = server["environment"]
    assert env["DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["QDRANT_URL"] == "http://qdrant:6333"
    assert env["MONGODB_URI"] == "mongodb://mongo:27017"
    assert env["HOST"] == "0.0.0.0"


def test_dockerfile_installs_the_package_and_serves() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#")
    assert "FROM python:3.11" in dockerfile
    assert "pip install ." in dockerfile
    assert 'CMD ["switchboard", "serve"]' in dockerfile
    for folder in ("graphs", "nodes", "stores", "server"):
        assert f"COPY {folder} ./{folder}" in dockerfile


def test_the_server_scales_to_several_replicas_without_conflicts() -> None:
    server = _compose()["services"]["server"]
    assert "container_name" not in server  # `--scale` refuses a fixed name
    for mapping in server["ports"]:
        host, _, container = str(mapping).rpartition(":")
        assert container == "8000"
        first, _, last = host.rpartition(":")[2].partition("-")
        assert last, f"{mapping}: one fixed host port cannot serve several replicas"
        assert int(last) - int(first) + 1 >= 3
    # Replicas share the database; nothing in the server's environment names a replica.
    assert "@postgres:5432/" in server["environment"]["DATABASE_URL"]
    assert server["environment"]["LOG_FORMAT"].startswith("${LOG_FORMAT")
