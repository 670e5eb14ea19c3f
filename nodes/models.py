"""The chat-model factory: the offline model, or any OpenAI-compatible endpoint."""

from __future__ import annotations

import os

from langchain_core.language_models import BaseChatModel
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from nodes.context import AgentContext, ModelSpec
from nodes.offline_model import OfflineChatModel

__all__ = ["ChatModelCache", "OfflineChatModel", "chat_model_for", "make_chat_model"]

NO_KEY = "no-key-set"  # the key sent to an OPENAI_BASE_URL when none is configured


def make_chat_model(spec: ModelSpec) -> BaseChatModel:
    """A chat model for `spec`: `OfflineChatModel`, or `ChatOpenAI` for provider "openai".

    For "openai", an unset `api_key` / `base_url` lets langchain-openai fall back to its own
    `OPENAI_API_KEY` / `OPENAI_BASE_URL` handling; with a `base_url` and no key anywhere (a
    local Ollama or vLLM wants none) it sends a placeholder key, since the OpenAI client refuses
    to start without one (a server that does want a key then answers 401 naming it invalid).
    """
    if spec.provider == "offline":
        return OfflineChatModel(model_name=spec.name, token_delay_s=spec.token_delay_s)
    if spec.provider == "openai":
        api_key = spec.api_key if spec.api_key and spec.api_key.get_secret_value() else None
        if api_key is None and spec.base_url and not os.environ.get("OPENAI_API_KEY"):
            api_key = SecretStr(NO_KEY)
        return ChatOpenAI(
            model=spec.name,
            temperature=spec.temperature,
            max_completion_tokens=spec.max_tokens,
            timeout=spec.timeout_s,
            max_retries=spec.max_retries,
            api_key=api_key,
            base_url=spec.base_url,
            stream_usage=True,
        )
    raise ValueError(f"unknown model provider {spec.provider!r}; use 'offline' or 'openai'")


class ChatModelCache:
    """Builds one chat model per distinct `ModelSpec` and reuses it (and its HTTP pool)."""

    def __init__(self, *, max_entries: int = 64) -> None:
        self._models: dict[ModelSpec, BaseChatModel] = {}
        self._max_entries = max_entries

    def get(self, spec: ModelSpec) -> BaseChatModel:
        """The cached model of `spec`, built on first use."""
        model = self._models.get(spec)
        if model is None:
            if len(self._models) >= self._max_entries:
                self._models.pop(next(iter(self._models)))
            model = self._models[spec] = make_chat_model(spec)
        return model


def chat_model_for(context: AgentContext) -> BaseChatModel:
    """The chat model a run uses: the context's override, its cache, or a fresh one."""
    if context.chat_model is not None:
        return context.chat_model
    if context.models is not None:
        return context.models.get(context.model)
    return make_chat_model(context.model)
