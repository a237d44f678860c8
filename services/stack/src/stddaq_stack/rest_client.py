"""A small client of the driver's REST API (standard library only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

API_PREFIX = "/api/v1"


class DriverError(RuntimeError):
    """The driver refused a call or could not be reached; the message says why."""


class DriverClient:
    """Calls the driver's REST API at `base_url` (e.g. http://127.0.0.1:5000)."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + API_PREFIX + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                result: dict[str, Any] = json.loads(response.read() or b"{}")
                return result
        except urllib.error.HTTPError as error:
            try:
                detail = json.loads(error.read()).get("detail", error.reason)
            except (ValueError, AttributeError):
                detail = error.reason
            raise DriverError(f"{method} {path}: {error.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise DriverError(f"cannot reach the driver at {self.base_url}: {reason}") from None

    def start(self, **request: Any) -> dict[str, Any]:
        """POST /start with the given fields (path, file_prefix, n_image, writer_id, compression)."""
        return self._call("POST", "/start", {k: v for k, v in request.items() if v is not None})

    def stop(self) -> dict[str, Any]:
        """POST /stop."""
        return self._call("POST", "/stop", {})

    def status(self) -> dict[str, Any]:
        """GET /status."""
        return self._call("GET", "/status")

    def health(self) -> dict[str, Any]:
        """GET /health."""
        return self._call("GET", "/health")
