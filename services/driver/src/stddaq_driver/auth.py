"""Optional bearer-token authentication of state-changing calls (start, stop, config)."""

from __future__ import annotations

import hmac


class TokenAuth:
    """Checks `Authorization: Bearer <token>`; allows everything when no token is set."""

    def __init__(self, token: str | None) -> None:
        if token is not None and not token.strip():
            raise ValueError("the API token is empty")
        self._token = token.strip().encode() if token is not None else None

    @property
    def enabled(self) -> bool:
        """True when state-changing calls need the token."""
        return self._token is not None

    def allows_token(self, token: str | None) -> bool:
        """True if auth is off, or `token` is the configured one (constant-time compare)."""
        if self._token is None:
            return True
        if token is None:
            return False
        return hmac.compare_digest(token.strip().encode(), self._token)

    def allows_header(self, authorization: str | None) -> bool:
        """True if auth is off, or the Authorization header carries the right bearer token."""
        if self._token is None:
            return True
        if authorization is None:
            return False
        scheme, _, credentials = authorization.strip().partition(" ")
        return scheme.lower() == "bearer" and self.allows_token(credentials)
