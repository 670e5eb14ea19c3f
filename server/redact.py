"""Masking of secret-looking values in what the server shows: API responses and webhooks.

A value is masked (replaced by `MASK`) when its key names a secret: one of the key's words
(split at `_`, `-`, `.`, spaces and camelCase humps, compared case-insensitively) is `key(s)`,
`secret(s)`, `token`, `password(s)`, `passwd`, `pwd`, `credential(s)`, `authorization`,
`cookie`, `passphrase`, or the one-word forms `apikey`, `accesstoken`, `authtoken`... — so
`api_key`, `openaiApiKey`, `ACCESS_TOKEN`, `DB_PASSWORD`, `client-secret`, `apikey` are masked
and `max_tokens`, `keywords`, `monkey` are not. Dicts are
walked at any depth, lists included. Only what is shown is masked: graphs and the database keep
the real values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

MASK = "***"
_SECRET_WORDS = frozenset(
    {
        "key",
        "keys",
        "secret",
        "secrets",
        "token",
        "password",
        "passwords",
        "passwd",
        "pwd",
        "credential",
        "credentials",
        "authorization",
        "cookie",
        "passphrase",
        "apikey",
        "apikeys",
        "accesstoken",
        "authtoken",
        "refreshtoken",
        "idtoken",
        "privatekey",
        "secretkey",
    }
)
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


@lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Whether a config/context/metadata key names a secret (see the module's docstring)."""
    return any(word.lower() in _SECRET_WORDS for word in _WORDS.findall(name))


def mask_secrets(value: Any) -> Any:
    """A copy of `value` with every value under a secret-looking key replaced by `MASK`
    (`None` stays `None`, so an unset key still shows as unset)."""
    if isinstance(value, Mapping):
        return {
            key: (
                MASK
                if isinstance(key, str) and is_secret_name(key) and inner is not None
                else mask_secrets(inner)
            )
            for key, inner in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_secrets(inner) for inner in value]
    return value
