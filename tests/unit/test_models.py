"""The chat-model factory: an OpenAI-compatible endpoint that needs no key (Ollama, vLLM)."""

from __future__ import annotations

import pytest
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from nodes.context import ModelSpec
from nodes.models import NO_KEY, make_chat_model


def test_a_base_url_without_any_key_gets_a_placeholder_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    spec = ModelSpec(provider="openai", name="llama3", base_url="http://127.0.0.1:11434/v1")
    model = make_chat_model(spec)
    assert isinstance(model, ChatOpenAI)
    assert isinstance(model.openai_api_key, SecretStr)
    assert model.openai_api_key.get_secret_value() == NO_KEY


def test_a_configured_key_is_sent_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    spec = ModelSpec(
        provider="openai", name="m", api_key=SecretStr("sk-real"), base_url="http://x/v1"
    )
    model = make_chat_model(spec)
    assert isinstance(model, ChatOpenAI)
    assert isinstance(model.openai_api_key, SecretStr)
    assert model.openai_api_key.get_secret_value() == "sk-real"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    model = make_chat_model(ModelSpec(provider="openai", name="m", base_url="http://x/v1"))
    assert isinstance(model, ChatOpenAI)
    assert isinstance(model.openai_api_key, SecretStr)
    assert model.openai_api_key.get_secret_value() == "sk-from-env"
