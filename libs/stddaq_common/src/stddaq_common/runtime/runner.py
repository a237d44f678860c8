"""The service runner: one way for every stddaq service to start, run and stop.

`run_service(name, build)` parses `CONFIG` (the DAQ config file, std_daq's first argument)
plus the service's own options, loads the config (exit 2 with one line per problem),
sets up logging and Stats, builds the service (exit 1 with one line on a startup error),
prints exactly one readiness line `READY <name> detector=<D> pid=<pid>` to stdout, runs
`service.run(stop)` in the main thread until SIGTERM/SIGINT set `stop`, then closes the
service, emits a final stats line and returns 0.

Every instance tags its stats (InfluxDB tags, Prometheus labels) through the runner, so
two writers or two live streams of one detector are two series: an argument whose dest is
named in INSTANCE_TAG_ARGS (`index` -> tag `index`, `stream_address` -> tag `stream`)
becomes a tag, and `--stats-tag KEY=VALUE` (repeatable) adds the operator's own. The
service's std_daq field names (runtime.std_daq_fields) are written beside its own.

`run_standalone` runs a process without a DAQ config (the fake camera) the same way: its
own parser, the same signals, build, READY line, run and close. Every service's
`__main__.main` is `main_for(...)` (or `standalone_main_for(...)`), the target of its
console script and of `python -m`.

Signals are turned into `stop.set()` by a small watcher thread: the signal handler itself
only writes the signal number to a pipe (no locks, no logging inside a handler, so a
signal can never deadlock or raise into the service). Repeated signals while stopping
are logged and otherwise ignored.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn, Protocol, TypeVar

from stddaq_common.config.model import ConfigError, DaqConfig, load_config
from stddaq_common.runtime.logs import log_level, setup_logging
from stddaq_common.runtime.process_name import name_process
from stddaq_common.runtime.stats import Stats
from stddaq_common.runtime.std_daq_fields import STD_DAQ_FIELDS

EXIT_OK = 0
EXIT_STARTUP_ERROR = 1
EXIT_CONFIG_ERROR = 2

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_log = logging.getLogger("stddaq.service")

INSTANCE_TAG_ARGS = {"index": "index", "writer_id": "index", "stream_address": "stream"}
"""Service arguments (by argparse dest) that tell instances apart, and their tag names (a
later one that is set wins: std_daq's positional writer_id over --index)."""


class StartupError(Exception):
    """Raised by a service's build() when it cannot start; the message is shown as is."""


class Service(Protocol):
    """What build() returns: run until `stop` is set, then release everything in close()."""

    def run(self, stop: threading.Event) -> None:
        """Do the service's work in the calling (main) thread until `stop` is set."""

    def close(self) -> None:
        """Release sockets, rings and files; called once, also after run() failed."""


S = TypeVar("S", bound=Service)

Build = Callable[[DaqConfig, argparse.Namespace, Stats], Service]
AddArguments = Callable[[argparse.ArgumentParser], None]


def is_startup_error(error: BaseException) -> bool:
    """True for errors that mean "cannot start here" rather than a bug.

    StartupError, OSError (ports, files, permissions), ConfigError, and any exception
    class defined by stddaq's own packages (RingError, WireFormatError, ...) or by pyzmq
    (ZMQError: address in use, bad endpoint).
    """
    if isinstance(error, StartupError | OSError | ConfigError):
        return True
    for cls in type(error).__mro__:
        module = cls.__module__
        if module.startswith("stddaq") or module == "zmq" or module.startswith("zmq."):
            return True
    return False


def describe_error(error: BaseException) -> str:
    """One line: the message of a StartupError, `<Type>: <message>` for others."""
    text = " ".join(str(error).split())
    if isinstance(error, StartupError) and text:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _metrics_port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is outside 0..65535 (0: any free port)")
    return port


def _stats_tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def instance_tags(args: argparse.Namespace) -> dict[str, str]:
    """The stats tags of this service instance: INSTANCE_TAG_ARGS, then --stats-tag."""
    tags = {
        tag: str(getattr(args, dest))
        for dest, tag in INSTANCE_TAG_ARGS.items()
        if getattr(args, dest, None) is not None
    }
    for key, value in getattr(args, "stats_tags", None) or []:
        tags[key] = value
    return tags


def _log_level_name(text: str) -> str:
    try:
        log_level(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def build_parser(name: str, add_arguments: AddArguments | None = None) -> argparse.ArgumentParser:
    """The argument parser of service `name`: CONFIG, common options, the service's own."""
    parser = argparse.ArgumentParser(prog=name, description=f"stddaq service {name}")
    parser.add_argument("config", metavar="CONFIG", help="the DAQ config file (JSON)")
    parser.add_argument(
        "--metrics-port",
        type=_metrics_port,
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics on this port (0: any free port; default: off)",
    )
    parser.add_argument(
        "--metrics-addr",
        default="127.0.0.1",
        metavar="ADDR",
        help="address the metrics endpoint binds (default: 127.0.0.1)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="override the config's log_format (json: one object per line for Filebeat)",
    )
    parser.add_argument(
        "--log-level",
        type=_log_level_name,
        default=None,
        metavar="LEVEL",
        help="override the config's log_level (trace, debug, info, warn, err, critical, off)",
    )
    parser.add_argument(
        "--stats-tag",
        dest="stats_tags",
        type=_stats_tag,
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="add this tag to every stats line and metric (repeatable); the instance's "
        "index or stream address is tagged already",
    )
    if add_arguments is not None:
        add_arguments(parser)
    return parser


class _StopSignals:
    """SIGTERM/SIGINT handlers that set an Event through a pipe and a watcher thread."""

    def __init__(self, name: str, stop: threading.Event) -> None:
        self.name = name
        self.stop = stop
        self.received: list[str] = []
        self._write_fd: int | None = None
        self._previous: dict[int, Any] = {}
        self._watcher: threading.Thread | None = None

    def install(self) -> bool:
        """Install the handlers (main thread only); False if that is not possible."""
        if threading.current_thread() is not threading.main_thread():
            _log.warning("not in the main thread: SIGTERM/SIGINT will not stop the service")
            return False
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        self._write_fd = write_fd
        self._watcher = threading.Thread(
            target=self._watch, args=(read_fd,), name=f"{self.name}-signals", daemon=True
        )
        self._watcher.start()
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        return True

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        fd = self._write_fd
        if fd is None:
            return  # shutting down: the process is about to exit anyway
        with contextlib.suppress(OSError):  # pipe full: a stop is already on its way
            os.write(fd, bytes([signum]))

    def _watch(self, read_fd: int) -> None:
        try:
            while True:
                data = os.read(read_fd, 64)
                for signum in data:
                    if signum == 0:
                        return
                    self._handle(signum)
                if not data:
                    return
        finally:
            os.close(read_fd)

    def _handle(self, signum: int) -> None:
        signame = signal.Signals(signum).name
        self.received.append(signame)
        if self.stop.is_set():
            _log.warning("%s received again while stopping: still shutting down", signame)
        else:
            _log.info("%s received: stopping", signame)
            self.stop.set()

    def uninstall(self, *, restore: bool) -> None:
        """Stop the watcher; put the previous handlers back if `restore`.

        Without `restore` the handlers stay installed but do nothing, so a late signal
        during interpreter exit is ignored instead of raising KeyboardInterrupt.
        """
        fd, self._write_fd = self._write_fd, None
        if fd is not None:
            os.set_blocking(fd, True)
            os.write(fd, b"\0")
            os.close(fd)
        if self._watcher is not None:
            self._watcher.join(5.0)
        if restore:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)


def _print_error(name: str, message: str) -> None:
    print(f"{name}: {message}", file=sys.stderr, flush=True)


def _start_metrics(stats: Stats, args: argparse.Namespace) -> None:
    """Serve Prometheus metrics if --metrics-port was given (StartupError if it cannot)."""
    if args.metrics_port is None:
        return
    try:
        stats.serve_metrics(args.metrics_port, args.metrics_addr)
    except OSError as error:
        raise StartupError(
            f"metrics endpoint {args.metrics_addr}:{args.metrics_port}: {error.strerror or error}"
        ) from None


def _build_service(name: str, build: Callable[[], S]) -> S | None:
    """Build the service; None (after one stderr line) if that fails."""
    try:
        return build()
    except Exception as error:
        if not is_startup_error(error):
            _log.exception("%s: build() failed unexpectedly", name)
        _print_error(name, f"cannot start: {describe_error(error)}")
        return None


def _run_and_close(name: str, service: Service, stop: threading.Event) -> int:
    """Run the service until it returns, then close it; the exit status."""
    status = EXIT_OK
    try:
        service.run(stop)
    except Exception as error:
        status = EXIT_STARTUP_ERROR
        if is_startup_error(error):
            _log.error("%s stopped: %s", name, describe_error(error))
        else:
            _log.exception("%s: run() failed unexpectedly", name)
    finally:
        stop.set()
        try:
            service.close()
        except Exception:
            status = EXIT_STARTUP_ERROR
            _log.exception("%s: close() failed", name)
    return status


def _run(
    name: str,
    build: Build,
    add_arguments: AddArguments | None,
    argv: list[str] | None,
    *,
    restore_signals: bool,
) -> int:
    if argv is None:  # the process's own command line: it is this service's process
        name_process(name)
    parser = build_parser(name, add_arguments)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # --help, or a usage error argparse already printed
        code = exit_request.code
        return code if isinstance(code, int) else EXIT_CONFIG_ERROR
    try:
        config = load_config(args.config)
    except ConfigError as error:
        for line in error.lines:
            _print_error(name, line)
        return EXIT_CONFIG_ERROR
    try:
        setup_logging(
            name,
            args.log_level or config.log_level,
            args.log_format or config.log_format,
            detector=config.detector_name,
        )
        stats = Stats(
            name,
            config.detector_name,
            period=config.stats_collection_period,
            influx_url=config.influxdb_url,
            tags=instance_tags(args),
        )
        stats.add_std_daq_fields(STD_DAQ_FIELDS.get(name, ()))
    except ValueError as error:
        _print_error(name, f"{args.config}: {error}")
        return EXIT_CONFIG_ERROR

    def make() -> Service:
        _start_metrics(stats, args)
        return build(config, args, stats)

    def ready_line(service: Service) -> str:
        line = f"READY {name} detector={config.detector_name} pid={os.getpid()}"
        if stats.metrics_port is not None:
            line += f" metrics_port={stats.metrics_port}"
        return line

    def finish(built: bool) -> None:
        if built:
            stats.emit_now()
        stats.close()

    what = f" (config {args.config})"
    return _serve(name, make, ready_line, restore_signals=restore_signals, finish=finish, what=what)


def _serve(
    name: str,
    build: Callable[[], S],
    ready_line: Callable[[S], str],
    *,
    restore_signals: bool,
    finish: Callable[[bool], None] | None = None,
    what: str = "",
) -> int:
    """Install the stop signals, build, print the READY line, run until stopped, close;
    `finish(built)` runs last in any case. The exit status."""
    stop = threading.Event()
    signals = _StopSignals(name, stop)
    signals.install()
    service: S | None = None
    try:
        service = _build_service(name, build)
        if service is None:
            return EXIT_STARTUP_ERROR
        try:
            print(ready_line(service), flush=True)
        except OSError as error:  # nobody reads stdout: carry on, the service itself is fine
            _log.warning("could not print the readiness line: %s", error)
        _log.info("%s running%s", name, what)
        status = _run_and_close(name, service, stop)
        _log.info("%s stopped (exit status %d)", name, status)
        return status
    finally:
        if finish is not None:
            finish(service is not None)
        signals.uninstall(restore=restore_signals)


def run_service(
    name: str,
    build: Build,
    add_arguments: AddArguments | None = None,
    argv: list[str] | None = None,
) -> int:
    """Run service `name` as a process would (see the module docstring); the exit status.

    `argv` defaults to sys.argv[1:]. The previous signal handlers are restored on return.
    """
    return _run(name, build, add_arguments, argv, restore_signals=True)


def main_for(name: str, build: Build, add_arguments: AddArguments | None = None) -> Callable[[], NoReturn]:
    """A console entry point for service `name`: `main = main_for("receiver", build)`."""

    def main() -> NoReturn:
        sys.exit(_run(name, build, add_arguments, None, restore_signals=False))

    main.__doc__ = f"Run the stddaq service {name} (exits with its status)."
    return main


def run_standalone(
    name: str,
    parse_args: Callable[[list[str] | None], argparse.Namespace],
    build: Callable[[argparse.Namespace], S],
    ready_line: Callable[[S], str],
    argv: list[str] | None = None,
    *,
    restore_signals: bool = True,
) -> int:
    """Run a process that takes no DAQ config (the fake camera) the way run_service runs a
    service: parse (usage errors exit 2), log at `--log-level`, build (exit 1 with one line
    on a startup error), print `ready_line(service)`, run until done or SIGTERM/SIGINT,
    close; the exit status."""
    if argv is None:  # the process's own command line: it is this service's process
        name_process(name)
    try:
        args = parse_args(argv)
    except SystemExit as exit_request:
        code = exit_request.code
        return code if isinstance(code, int) else EXIT_CONFIG_ERROR
    try:
        setup_logging(name, getattr(args, "log_level", None) or "info")
    except ValueError as error:
        _print_error(name, str(error))
        return EXIT_CONFIG_ERROR
    return _serve(name, lambda: build(args), ready_line, restore_signals=restore_signals)


def standalone_main_for(
    name: str,
    parse_args: Callable[[list[str] | None], argparse.Namespace],
    build: Callable[[argparse.Namespace], S],
    ready_line: Callable[[S], str],
) -> Callable[[], NoReturn]:
    """A console entry point for a process without a DAQ config (see run_standalone)."""

    def main() -> NoReturn:
        sys.exit(run_standalone(name, parse_args, build, ready_line, None, restore_signals=False))

    main.__doc__ = f"Run {name} (exits with its status)."
    return main
