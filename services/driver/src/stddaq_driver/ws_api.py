"""std_daq's WebSocket control protocol (spec section 8), on its own port.

Clients send `{"command": "start", "path": ..., "file_prefix": ..., "n_image": ...,
"writer_id": ..., "start_id": 0}` or `{"command": "stop"}`. Every client is sent
`{"status": S}` (with `"count": n`, the images dealt to the writers, once images are being
recorded, and `"reason"` in state error) every 100 ms and at every state change; every
state an acquisition passes through is sent, also when states follow each other within
milliseconds. Messages are serialised as std_daq's driver does: keys sorted, no spaces
(`{"count":0,"status":"recording"}`), so they are byte for byte std_daq's. A client that
connects with `?extras=1` also gets stddaq's own numbers in extra fields (`images_written`,
`images_missing`, `acquisition_id`). A start while busy (or refused by the path policy,
or without the token) answers `{"reason": ..., "status": "rejected"}` to that client only;
a message that is not valid JSON or not a valid command (a field of the wrong type
included: nothing is converted) answers `{"reason": ..., "status": "error"}` to that
client only (the acquisition is unaffected).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import ValidationError
from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed

from stddaq_driver.auth import TokenAuth
from stddaq_driver.control import DriverControl, InvalidRequest, Refused
from stddaq_driver.models import StartRequest
from stddaq_driver.state import DaqState
from stddaq_driver.status_board import AcquisitionSnapshot

log = logging.getLogger(__name__)

STATUS_PERIOD_S = 0.1
MAX_CLIENT_BUFFER_BYTES = 1 << 20
"""A client that has more than this waiting unsent is skipped until it catches up."""

_COUNTED_STATES = frozenset(
    {DaqState.RECORDING, DaqState.STOP, DaqState.SAVING_FILE, DaqState.FILE_SAVED}
)


def encode(message: dict[str, Any]) -> str:
    """A message as std_daq's driver writes it: keys sorted, no spaces."""
    return json.dumps(message, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def status_message(snapshot: AcquisitionSnapshot, *, extras: bool = False) -> dict[str, Any]:
    """The upstream status message of a snapshot (`count`: images dealt, as std_daq's);
    with `extras`, stddaq's own numbers in fields std_daq does not have."""
    message: dict[str, Any] = {"status": snapshot.state.value}
    if snapshot.state in _COUNTED_STATES:
        message["count"] = snapshot.images_dealt
    elif snapshot.state is DaqState.ERROR:
        message["reason"] = snapshot.last_error or "unknown error"
        message["count"] = snapshot.images_dealt
    if extras:
        message["acquisition_id"] = snapshot.acquisition_id
        message["images_written"] = snapshot.images_written
        message["images_missing"] = snapshot.images_missing
    return message


def wants_extras(path: str) -> bool:
    """True if the client's URL asks for stddaq's extra fields (`?extras=1`)."""
    values = parse_qs(urlsplit(path).query).get("extras", [])
    return any(value.lower() in ("1", "true", "yes") for value in values)


def _validation_reason(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"]) or "message"
        parts.append(f"{field}: {item['msg']}")
    return "; ".join(parts)


def _rejected(reason: str) -> dict[str, Any]:
    return {"status": "rejected", "reason": reason}


def _error(reason: str) -> dict[str, Any]:
    log.warning("WebSocket message refused: %s", reason)
    return {"status": "error", "reason": reason}


def _answer_to(refused: Refused) -> dict[str, Any]:
    """A refusal of the control as std_daq answers it: `error` for a malformed request,
    `rejected` for one that does not fit now (busy, path, writers, nothing to stop)."""
    if isinstance(refused, InvalidRequest):
        return _error(refused.reason)
    return _rejected(refused.reason)


class WsProtocol:
    """Handles clients and pushes the status to all of them."""

    def __init__(self, control: DriverControl, auth: TokenAuth) -> None:
        self._control = control
        self._auth = auth
        self._clients: set[ServerConnection] = set()
        self._with_extras: set[ServerConnection] = set()
        self._changed: asyncio.Event | None = None
        self._has_clients: asyncio.Event | None = None
        """Set while a client is connected: without one the pusher sleeps (no 100-ms ticks)."""
        self._joined_version = 0
        """The board's version when the first client of a run of clients connected."""

    # --- one message (no I/O: unit-testable) ---

    def handle_message(self, message: str | bytes, authorized: bool) -> dict[str, Any] | None:
        """The answer to one client message (None: no direct answer, the status says it)."""
        counters = self._control.counters
        try:
            data = json.loads(message)
        except (ValueError, UnicodeDecodeError) as error:
            counters.ws_bad_messages.inc()
            return _error(f"the message is not valid JSON: {error}")
        if not isinstance(data, dict):
            counters.ws_bad_messages.inc()
            return _error(f"the message must be a JSON object, got {type(data).__name__}")
        command = data.get("command")
        if command not in ("start", "stop"):
            counters.ws_bad_messages.inc()
            return _error(f"field 'command' must be 'start' or 'stop', got {command!r}")
        if not authorized:
            counters.auth_refused.inc()
            log.warning("WebSocket %s refused: no valid token", command)
            return _rejected(
                f"{command} needs the token (header Authorization: Bearer <token>, or "
                "?token=<token> in the URL)"
            )
        if command == "stop":
            try:
                self._control.stop()
            except Refused as refused:
                return _answer_to(refused)
            return None
        fields = {key: value for key, value in data.items() if key != "command"}
        try:
            request = StartRequest.model_validate(fields)
        except ValidationError as error:
            counters.ws_bad_messages.inc()
            return _error(_validation_reason(error))
        try:
            self._control.start(request)
        except Refused as refused:
            return _answer_to(refused)
        return None

    # --- connections ---

    def _is_authorized(self, connection: ServerConnection) -> bool:
        if not self._auth.enabled:
            return True
        request = connection.request
        if request is None:
            return False
        if self._auth.allows_header(request.headers.get("Authorization")):
            return True
        tokens = parse_qs(urlsplit(request.path).query).get("token", [])
        return any(self._auth.allows_token(token) for token in tokens)

    async def handle(self, connection: ServerConnection) -> None:
        """Serve one client until it goes away."""
        authorized = self._is_authorized(connection)
        request = connection.request
        extras = request is not None and wants_extras(request.path)
        if not self._clients:  # the pusher goes on from here (a change from now on is sent)
            self._joined_version = self._control.board.version
        self._clients.add(connection)
        if self._has_clients is not None:
            self._has_clients.set()
        if extras:
            self._with_extras.add(connection)
        self._control.counters.ws_clients_connected.inc()
        try:
            first = status_message(self._control.status(), extras=extras)
            await connection.send(encode(first))
            async for message in connection:
                answer = self.handle_message(message, authorized)
                if answer is not None:
                    await connection.send(encode(answer))
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(connection)
            if not self._clients and self._has_clients is not None:
                self._has_clients.clear()
            self._with_extras.discard(connection)

    # --- status push ---

    def notify_change(self) -> None:
        """Called from the dealing thread at every state change: wake the pusher."""
        changed = self._changed
        loop = self._loop
        if changed is not None and loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(changed.set)

    _loop: asyncio.AbstractEventLoop | None = None

    async def push_status_forever(self) -> None:
        """Send the status every 100 ms, and every state change as soon as it happens."""
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._has_clients = asyncio.Event()
        if self._clients:
            self._has_clients.set()
        board = self._control.board
        board.add_listener(self.notify_change)
        version = board.version
        while True:
            if not self._clients:
                # Nobody to tell: sleep until a client comes; then go on with the changes
                # from its connection on (it is sent the status of that moment first).
                await self._has_clients.wait()
                version = self._joined_version
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), STATUS_PERIOD_S)
            self._changed.clear()
            version, changes = board.changes_since(version)
            snapshots = changes or [board.snapshot()]
            clients = [client for client in self._clients if self._can_take_more(client)]
            if not clients:
                continue
            plain = [client for client in clients if client not in self._with_extras]
            extras = [client for client in clients if client in self._with_extras]
            for snapshot in snapshots:
                if plain:
                    broadcast(plain, encode(status_message(snapshot)))
                if extras:
                    broadcast(extras, encode(status_message(snapshot, extras=True)))

    @staticmethod
    def _can_take_more(client: ServerConnection) -> bool:
        transport = client.transport
        return transport is None or transport.get_write_buffer_size() < MAX_CLIENT_BUFFER_BYTES
