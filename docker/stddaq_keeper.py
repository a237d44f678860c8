#!/usr/bin/env python3
"""Keeper of one detector's Compose project (`stddaq-keeper` in every image).

    stddaq-keeper --project NAME [--socket PATH] [--settle S]

Docker never restarts a container that `docker kill` stopped (it counts as a manual stop,
whatever the restart policy). The keeper starts such containers again: every container of
project NAME (label com.docker.compose.project) that exited with a non-zero code (killed,
crashed, out of memory) and that the restart policy did not bring back within `--settle`
seconds. A container that stopped cleanly (exit code 0: `docker stop`, `docker compose
stop/down`, a SIGTERM) is left alone: that stop was meant.

It blocks on the engine's event stream (`GET /events`, filtered to the project's `die`
events), so it costs no CPU while nothing happens; after a lost connection it reconnects
and looks at every container of the project once. A container that keeps dying is started
with growing pauses (1 s doubling to 60 s; back to 1 s after it ran for 60 s). Compose
runs two keepers (`scale: 2`), so that a killed keeper is started by the other one.
Standard library only: it talks HTTP to the engine's unix socket.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import json
import signal
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any

PROJECT_LABEL = "com.docker.compose.project"
ONEOFF_LABEL = "com.docker.compose.oneoff"
FIRST_PAUSE_S = 1.0
LONGEST_PAUSE_S = 60.0
STABLE_S = 60.0
RECONNECT_S = 2.0
PR_SET_NAME = 15


def say(message: str) -> None:
    """One log line (Docker's json-file driver keeps it)."""
    print(f"stddaq-keeper: {message}", flush=True)


class UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over the engine's unix socket."""

    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("docker", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class Engine:
    """The few Engine API calls the keeper makes."""

    def __init__(self, path: str) -> None:
        self.path = path

    def call(self, method: str, url: str) -> tuple[int, Any]:
        """One request; (status, decoded JSON body or None)."""
        connection = UnixConnection(self.path, timeout=30)
        try:
            connection.request(method, url)
            answer = connection.getresponse()
            body = answer.read()
        finally:
            connection.close()
        try:
            return answer.status, json.loads(body) if body else None
        except ValueError:
            return answer.status, None

    def containers(self, project: str) -> list[dict[str, Any]]:
        """Every container of the project, also stopped ones."""
        filters = json.dumps({"label": [f"{PROJECT_LABEL}={project}"]})
        status, body = self.call("GET", f"/containers/json?all=1&filters={urllib.parse.quote(filters)}")
        if status != 200 or not isinstance(body, list):
            raise OSError(f"listing the containers of {project}: HTTP {status}")
        return body

    def inspect(self, container_id: str) -> dict[str, Any] | None:
        """The container's details; None once it is gone."""
        status, body = self.call("GET", f"/containers/{container_id}/json")
        return body if status == 200 and isinstance(body, dict) else None

    def start(self, container_id: str) -> int:
        """Start the container; the HTTP status (204 started, 304 already running)."""
        status, _ = self.call("POST", f"/containers/{container_id}/start")
        return status

    def events(self, project: str) -> Iterator[dict[str, Any]]:
        """The project's container `die` events, as they come (blocks between them). The
        stream is open when this returns, so a sweep after it misses nothing."""
        filters = json.dumps(
            {"type": ["container"], "event": ["die"], "label": [f"{PROJECT_LABEL}={project}"]}
        )
        connection = UnixConnection(self.path, timeout=None)
        try:
            connection.request("GET", f"/events?filters={urllib.parse.quote(filters)}")
            answer = connection.getresponse()
        except BaseException:
            connection.close()
            raise
        if answer.status != 200:
            connection.close()
            raise OSError(f"event stream: HTTP {answer.status}")
        return _event_lines(connection, answer)


def _event_lines(
    connection: http.client.HTTPConnection, answer: http.client.HTTPResponse
) -> Iterator[dict[str, Any]]:
    try:
        while True:
            line = answer.readline()
            if not line:
                raise OSError("the engine closed the event stream")
            if line.strip():
                yield json.loads(line)
    finally:
        connection.close()


def should_start(details: dict[str, Any]) -> bool:
    """True for a container that is down after a kill or crash (not a clean stop, not one
    the restart policy is restarting, not a one-off `compose run`)."""
    state = details.get("State", {})
    labels = details.get("Config", {}).get("Labels") or {}
    if labels.get(ONEOFF_LABEL) == "True":
        return False
    if state.get("Running") or state.get("Restarting") or state.get("Status") != "exited":
        return False
    return int(state.get("ExitCode", 0)) != 0


class Keeper:
    """Starts the project's killed or crashed containers again."""

    def __init__(self, engine: Engine, project: str, settle: float) -> None:
        self.engine = engine
        self.project = project
        self.settle = settle
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._pause: dict[str, float] = {}
        self._started_at: dict[str, float] = {}

    def schedule(self, container_id: str, name: str) -> None:
        """Look at the container again after the settle time (and its pause), in a thread."""
        with self._lock:
            if container_id in self._pending:
                return
            self._pending.add(container_id)
            pause = self._pause.get(container_id, 0.0)
            if time.monotonic() - self._started_at.get(container_id, -STABLE_S) >= STABLE_S:
                pause = 0.0  # it ran long enough: no crash loop
        timer = threading.Timer(self.settle + pause, self._revive, (container_id, name))
        timer.daemon = True
        timer.start()

    def _revive(self, container_id: str, name: str) -> None:
        try:
            details = self.engine.inspect(container_id)
            if details is not None and should_start(details):
                code = details["State"].get("ExitCode")
                status = self.engine.start(container_id)
                say(f"started {name} again (it exited with code {code}): HTTP {status}")
                with self._lock:
                    previous = self._pause.get(container_id, 0.0)
                    self._pause[container_id] = min(LONGEST_PAUSE_S, max(FIRST_PAUSE_S, 2 * previous))
                    self._started_at[container_id] = time.monotonic()
        except OSError as error:
            say(f"cannot start {name} again: {error}")
        finally:
            with self._lock:
                self._pending.discard(container_id)

    def sweep(self) -> None:
        """Look at every container of the project once (at start and after a reconnect)."""
        for container in self.engine.containers(self.project):
            names = container.get("Names") or ["?"]
            if container.get("State") == "exited":
                self.schedule(container["Id"], names[0].lstrip("/"))

    def run(self) -> None:
        """Follow the event stream forever (reconnecting)."""
        while True:
            try:
                events = self.engine.events(self.project)
                self.sweep()
                say(f"watching the containers of project {self.project} ({self.engine.path})")
                for event in events:
                    attributes = event.get("Actor", {}).get("Attributes", {})
                    if attributes.get("exitCode", "0") != "0":
                        self.schedule(event["Actor"]["ID"], attributes.get("name", "?"))
            except (OSError, ValueError, http.client.HTTPException) as error:
                say(f"engine at {self.engine.path}: {error}; again in {RECONNECT_S:g} s")
                time.sleep(RECONNECT_S)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="stddaq-keeper", description="Start killed or crashed containers of a Compose project again"
    )
    parser.add_argument("--project", required=True, help="the Compose project to keep")
    parser.add_argument("--socket", default="/run/docker.sock", help="the engine's unix socket")
    parser.add_argument(
        "--settle", type=float, default=1.0, help="seconds the restart policy gets first (default 1)"
    )
    return parser.parse_args(argv)


def name_process() -> None:
    """Show as `stddaq-keeper` in ps (the interpreter would show as python3)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_NAME, ctypes.c_char_p(b"stddaq-keeper"), 0, 0, 0)


def _exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the keeper until SIGTERM/SIGINT (exit 0)."""
    args = parse_args(argv)
    name_process()
    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)
    Keeper(Engine(args.socket), args.project, args.settle).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
