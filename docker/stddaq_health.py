#!/usr/bin/env python3
"""Container healthcheck of the stddaq services (`stddaq-health` in every image).

    stddaq-health [--ring NAME [--exit-if-orphaned]] [--unix PATH] [--tcp HOST:PORT]
                  [--http URL] [--writer-heard URL INDEX]

Every check given must pass (exit 0); the first failing one prints one line and exits 1.
Standard library only, so a check costs a few tens of milliseconds:

- `--ring NAME`: the ring /dev/shm/NAME exists and its owner (the receiver) is alive: the
  owner holds an exclusive flock on the companion segment NAME.stddaq for its whole life,
  so a shared non-blocking flock that succeeds means no live owner.
- `--exit-if-orphaned` (with --ring): when the ring has no live owner (for 2 s), or is
  missing for 30 s, send SIGTERM to PID 1 (the service). Containers that join the
  receiver's IPC namespace keep the old /dev/shm when the receiver container restarts;
  the clean exit lets the restart policy start them again inside the receiver's current
  namespace.
- `--unix PATH`: something accepts connections on the unix socket PATH (e.g. the
  receiver's metadata publisher, ipc://<ipc_dir>/<detector>-image).
- `--tcp HOST:PORT`: something accepts TCP connections there (a bound ZeroMQ socket).
- `--http URL`: the URL answers 2xx; a JSON object with an "ok" member must have it true.
- `--writer-heard URL INDEX`: the driver's /api/v1/health at URL does not list writer
  INDEX in `silent_writers` (the driver hears that writer's heartbeats).
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

SHM_DIR = "/dev/shm"
STATE_DIR = "/tmp"
"""Where a check remembers since when the ring is missing (a tmpfs in the containers)."""
TIMEOUT_S = 2.0
ORPHAN_GRACE_S = 2.0
MISSING_GRACE_S = 30.0
COMPANION_SUFFIX = ".stddaq"


class CheckFailed(Exception):
    """One check did not pass; the message says why."""


@dataclass(frozen=True)
class RingState:
    """What /dev/shm shows about one ring."""

    exists: bool
    owner_alive: bool


def ring_state(name: str, shm_dir: str = SHM_DIR) -> RingState:
    """Whether ring `name` exists in `shm_dir` and a live process owns it."""
    data = os.path.join(shm_dir, name)
    companion = data + COMPANION_SUFFIX
    if not (os.path.exists(data) and os.path.exists(companion)):
        return RingState(exists=False, owner_alive=False)
    try:
        fd = os.open(companion, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return RingState(exists=False, owner_alive=False)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return RingState(exists=True, owner_alive=True)
        raise
    finally:
        os.close(fd)  # also drops our shared lock at once if we got it
    return RingState(exists=True, owner_alive=False)


def stop_service() -> None:
    """SIGTERM to PID 1, the service: it stops cleanly and the restart policy starts the
    container again (inside the receiver's current IPC namespace)."""
    os.kill(1, signal.SIGTERM)


def _missing_since(marker: Path, now: float) -> float:
    """When the ring was first seen missing (recorded in `marker`; now if not yet)."""
    try:
        return float(marker.read_text())
    except (OSError, ValueError):
        marker.write_text(repr(now))
        return now


def check_ring(
    name: str,
    exit_if_orphaned: bool,
    *,
    shm_dir: str = SHM_DIR,
    state_dir: str = STATE_DIR,
    stop: Callable[[], None] = stop_service,
) -> None:
    """Fail unless ring `name` exists with a live owner.

    With `exit_if_orphaned` (for containers that join the receiver's IPC namespace): a ring
    without owner means the receiver died after creating it here, so its restart made a
    new namespace and ours is stale: stop the service (after a short re-check). A missing
    ring may also be a receiver still starting, so only one missing for MISSING_GRACE_S
    (remembered in `state_dir` between checks) stops the service.
    """
    state = ring_state(name, shm_dir)
    marker = Path(state_dir) / f"stddaq-health-{name}.missing-since"
    if state.owner_alive:
        marker.unlink(missing_ok=True)
        return
    where = f"ring {shm_dir}/{name}"
    if not exit_if_orphaned:
        raise CheckFailed(f"{where} {'has no live owner' if state.exists else 'does not exist'}")
    if state.exists:
        time.sleep(ORPHAN_GRACE_S)
        if ring_state(name, shm_dir).owner_alive:
            return
        stop()
        raise CheckFailed(
            f"{where} has no live owner: the receiver restarted in a new IPC namespace; "
            "stopped the service so that the restart policy starts it in the new one"
        )
    now = time.monotonic()
    missing_for = now - _missing_since(marker, now)
    if missing_for >= MISSING_GRACE_S:
        marker.unlink(missing_ok=True)
        stop()
        raise CheckFailed(
            f"{where} has been missing for {missing_for:.0f} s: stopped the service so that "
            "the restart policy starts it in the receiver's current IPC namespace"
        )
    raise CheckFailed(f"{where} does not exist (for {missing_for:.0f} s)")


def check_unix(path: str) -> None:
    """Fail unless a process accepts connections on the unix socket `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT_S)
        try:
            sock.connect(path)
        except OSError as error:
            raise CheckFailed(f"unix socket {path}: {error.strerror or error}") from None


def split_host_port(text: str) -> tuple[str, int]:
    """("host", port) from "host:port"; a wildcard host means the loopback address."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise CheckFailed(f"{text!r} is not HOST:PORT")
    host = host.strip("[]")
    if host in ("", "*", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, int(port)


def check_tcp(address: str) -> None:
    """Fail unless something accepts TCP connections at `address` (HOST:PORT)."""
    host, port = split_host_port(address.removeprefix("tcp://"))
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_S):
            pass
    except OSError as error:
        raise CheckFailed(f"tcp {host}:{port}: {error.strerror or error}") from None


def http_get(url: str) -> tuple[int, bytes]:
    """(status, body) of a plain HTTP/1.0 GET of `url` (http:// only). A raw socket, not
    urllib: a healthcheck runs every few seconds, and importing urllib.request (with
    http.client and email) would cost more CPU than all the checks together."""
    if not url.startswith("http://"):
        raise CheckFailed(f"{url}: only http:// URLs are checked")
    where, _, path = url.removeprefix("http://").partition("/")
    host, sep, port = where.rpartition(":")
    if not sep or not port.isdigit():  # no port given (also "[::1]")
        host, port = where, "80"
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
            sock.sendall(f"GET /{path} HTTP/1.0\r\nHost: {where}\r\nConnection: close\r\n\r\n".encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except (OSError, ValueError) as error:
        raise CheckFailed(f"{url}: {getattr(error, 'strerror', None) or error}") from None
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise CheckFailed(f"{url}: not an HTTP answer")
    return int(status_line[1]), body


def get_json(url: str) -> object:
    """The decoded JSON body of a 2xx answer (None if the body is not JSON)."""
    import json  # only the HTTP checks need it

    status, body = http_get(url)
    if not 200 <= status < 300:
        raise CheckFailed(f"{url}: HTTP {status}")
    try:
        return json.loads(body)
    except ValueError:
        return None


def check_http(url: str) -> None:
    """Fail unless `url` answers 2xx (and "ok" is true when the answer has it)."""
    body = get_json(url)
    if isinstance(body, dict) and "ok" in body and body["ok"] is not True:
        raise CheckFailed(f"{url}: ok is {body['ok']!r}")


def check_writer_heard(url: str, index: int) -> None:
    """Fail unless the driver's health answer at `url` does not list writer `index` as silent."""
    body = get_json(url)
    if not isinstance(body, dict) or not isinstance(body.get("silent_writers"), list):
        raise CheckFailed(f"{url}: no silent_writers list in the answer")
    if index in body["silent_writers"]:
        raise CheckFailed(f"the driver has not heard from writer {index} recently")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="stddaq-health", description="Healthcheck of a stddaq service container"
    )
    parser.add_argument("--ring", metavar="NAME", help="ring /dev/shm/NAME exists with a live owner")
    parser.add_argument(
        "--exit-if-orphaned",
        action="store_true",
        help="with --ring: SIGTERM PID 1 when the ring stays without owner",
    )
    parser.add_argument("--unix", metavar="PATH", action="append", default=[], help="unix socket accepts")
    parser.add_argument("--tcp", metavar="HOST:PORT", action="append", default=[], help="TCP port accepts")
    parser.add_argument("--http", metavar="URL", action="append", default=[], help="URL answers 2xx")
    parser.add_argument(
        "--writer-heard",
        nargs=2,
        metavar=("URL", "INDEX"),
        help="the driver health answer at URL does not list writer INDEX as silent",
    )
    args = parser.parse_args(argv)
    if args.exit_if_orphaned and not args.ring:
        parser.error("--exit-if-orphaned needs --ring")
    if args.writer_heard and not args.writer_heard[1].isdigit():
        parser.error("--writer-heard INDEX must be a whole number")
    return args


def checks_of(args: argparse.Namespace) -> list[Callable[[], None]]:
    """The checks the arguments ask for, in a fixed order (cheapest first)."""
    checks: list[Callable[[], None]] = []
    if args.ring:
        checks.append(partial(check_ring, args.ring, args.exit_if_orphaned))
    checks += [partial(check_unix, path) for path in args.unix]
    checks += [partial(check_tcp, address) for address in args.tcp]
    checks += [partial(check_http, url) for url in args.http]
    if args.writer_heard:
        url, index = args.writer_heard
        checks.append(partial(check_writer_heard, url, int(index)))
    return checks


def main(argv: Sequence[str] | None = None) -> int:
    """Run the checks; 0 when all pass, 1 (one line on stdout) when one fails."""
    args = parse_args(argv)
    try:
        for check in checks_of(args):
            check()
    except CheckFailed as failure:
        print(f"unhealthy: {failure}", flush=True)
        return 1
    print("healthy", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
