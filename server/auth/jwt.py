"""JWT bearer tokens of the built-in authenticator (PyJWT): signed with the HS256 secret, or by a
key of the identity provider's JWKS URL; expiry, `aud` and `iss` checked."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import jwt
from pydantic import SecretStr

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
PUBLIC_KEY_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
LEEWAY_S = 30  # clock skew tolerated on exp/nbf/iat


class InvalidTokenError(Exception):
    """The token is not one the server accepts (the message says why, for the log)."""


class JwtVerifier:
    """Checks JWTs against one HMAC secret or one JWKS URL (never both: no algorithm mix-up)."""

    def __init__(
        self,
        *,
        secret: SecretStr | None,
        jwks_url: str | None,
        algorithms: Sequence[str] | None = None,
        audience: str | None = None,
        issuer: str | None = None,
    ) -> None:
        if (secret is None) == (jwks_url is None):
            raise ValueError("set exactly one of AUTH_JWT_SECRET and AUTH_JWKS_URL")
        allowed = HMAC_ALGORITHMS if secret is not None else PUBLIC_KEY_ALGORITHMS
        chosen = list(algorithms or (["HS256"] if secret is not None else ["RS256", "ES256"]))
        wrong = [name for name in chosen if name not in allowed]
        if wrong:
            source = "AUTH_JWT_SECRET" if secret is not None else "AUTH_JWKS_URL"
            raise ValueError(
                f"AUTH_JWT_ALGORITHMS {wrong} cannot be used with {source}; use "
                f"{', '.join(sorted(allowed))}"
            )
        self.algorithms = chosen
        self.audience = audience
        self.issuer = issuer
        self._secret = secret
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, timeout=10) if jwks_url else None

    async def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token.

        Raises:
            InvalidTokenError: bad signature, expired, wrong audience or issuer, unknown key...
        """
        try:
            if self._jwks is not None:
                # PyJWKClient fetches (and caches) the key set with blocking I/O.
                signing = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
                key: Any = signing.key
            else:
                assert self._secret is not None
                key = self._secret.get_secret_value()
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp"], "verify_aud": self.audience is not None},
            )
        except (jwt.PyJWTError, ValueError) as error:
            raise InvalidTokenError(f"{type(error).__name__}: {error}") from None
        return claims
