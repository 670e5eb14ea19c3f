"""Small builders the API tests share."""

from __future__ import annotations

import uuid
from typing import Any

import httpx


def unique_email() -> str:
    """An email no other test uses."""
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


def create_user(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    """Create a user (201 expected) and return it."""
    body = {"email": unique_email(), "name": "Test User", **fields}
    response = api.post("/users", json=body)
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()
    return user


def create_agent(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    """Create an agent (201 expected) and return it."""
    body = {"name": "helper", **fields}
    response = api.post("/agents", json=body)
    assert response.status_code == 201, response.text
    agent: dict[str, Any] = response.json()
    return agent


def create_conversation(api: httpx.Client, user_id: str, agent_id: str) -> dict[str, Any]:
    """Create a conversation (201 expected) and return it."""
    response = api.post("/conversations", json={"user_id": user_id, "agent_id": agent_id})
    assert response.status_code == 201, response.text
    conversation: dict[str, Any] = response.json()
    return conversation
