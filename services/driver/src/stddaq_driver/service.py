"""The driver service: its command-line options, and how its threads are started and stopped.

Threads: the main thread waits (run_service's contract) and watches the others; the
dealing thread (engine.py) owns every ZeroMQ socket; the web thread (web_server.py) serves
REST and WebSocket.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from dataclasses import replace

from stddaq_common.config.model import DaqConfig
from stddaq_common.runtime.runner import StartupError
from stddaq_common.runtime.server_thread import bind_listener
from stddaq_common.runtime.stats import Stats
from stddaq_driver.acquisition_ids import AcquisitionIdStore
from stddaq_driver.auth import TokenAuth
from stddaq_driver.control import DriverControl
from stddaq_driver.driver_stats import engine_counters, web_counters
from stddaq_driver.engine import Engine
from stddaq_driver.instance_lock import InstanceLock, InstanceLockError
from stddaq_driver.path_policy import PathPolicy
from stddaq_driver.rest_api import API_PREFIX, create_app, rest_protocol
from stddaq_driver.status_board import StatusBoard
from stddaq_driver.web_server import WebServer
from stddaq_driver.ws_api import WsProtocol

log = logging.getLogger(__name__)

SERVICE_NAME = "driver"
DEFAULT_REST_PORT = 5000
DEFAULT_WS_PORT = 8080
WATCH_PERIOD_S = 0.5

ENV_BIND_ADDR = "STDDAQ_DRIVER_BIND_ADDR"
ENV_REST_PORT = "STDDAQ_DRIVER_REST_PORT"
ENV_WS_PORT = "STDDAQ_DRIVER_WS_PORT"
ENV_ALLOWED_ROOTS = "STDDAQ_DRIVER_ALLOWED_ROOTS"
ENV_TOKEN = "STDDAQ_DRIVER_TOKEN"
ENV_TOKEN_FILE = "STDDAQ_DRIVER_TOKEN_FILE"


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is outside 0..65535")
    return port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The driver's own options (each also settable through an environment variable)."""
    env = os.environ
    parser.add_argument(
        "--bind-addr", default=env.get(ENV_BIND_ADDR, "127.0.0.1"), metavar="ADDR",
        help=f"address the REST and WebSocket ports bind (default 127.0.0.1; ${ENV_BIND_ADDR})",
    )
    parser.add_argument(
        "--rest-port", type=_port, default=_port(env.get(ENV_REST_PORT, str(DEFAULT_REST_PORT))),
        metavar="PORT", help=f"REST API port (default {DEFAULT_REST_PORT}; ${ENV_REST_PORT})",
    )
    parser.add_argument(
        "-p", "--port", "--ws-port", dest="ws_port", type=_port,
        default=_port(env.get(ENV_WS_PORT, str(DEFAULT_WS_PORT))),
        metavar="PORT",
        help=f"std_daq WebSocket port (default {DEFAULT_WS_PORT}; ${ENV_WS_PORT}); "
        "-p/--port is std_daq's spelling",
    )
    parser.add_argument(
        "-n", "--number_of_writers", dest="number_of_writers", type=int, default=None,
        metavar="N",
        help="std_daq's writer count; stddaq takes it from the config (number_of_writers) "
        "and refuses to start if N differs",
    )
    parser.add_argument(
        "-s", "--source_suffix", dest="source_suffix", default="image", metavar="SUFFIX",
        help="std_daq's metadata stream suffix; stddaq's driver deals the image stream "
        "(<detector>-image) and refuses another suffix",
    )
    parser.add_argument(
        "--allowed-root", action="append", default=None, metavar="DIR",
        help="directory acquisitions may write below (repeatable; required, here or as "
        f"${ENV_ALLOWED_ROOTS}, ':'-separated)",
    )
    parser.add_argument(
        "--token-file", default=env.get(ENV_TOKEN_FILE), metavar="FILE",
        help="file holding the bearer token state-changing calls need (or the token itself "
        f"in ${ENV_TOKEN}); default: no authentication",
    )
    parser.add_argument(
        "--state-dir", default=None, metavar="DIR",
        help="folder where the last acquisition id is kept, so that ids never repeat "
        "across restarts (default: none; ids start at 1)",
    )
    parser.add_argument(
        "--no-save-config", action="store_true",
        help="apply config changes made over the API in memory only (default: also save "
        "them to CONFIG)",
    )


def allowed_roots_from(args: argparse.Namespace) -> list[str]:
    """The allowed roots from --allowed-root, else from the environment."""
    if args.allowed_root:
        return list(args.allowed_root)
    return [root for root in os.environ.get(ENV_ALLOWED_ROOTS, "").split(":") if root]


def check_std_daq_options(config: DaqConfig, args: argparse.Namespace) -> None:
    """Refuse std_daq's -n and -s values that stddaq's driver cannot serve as asked."""
    n = args.number_of_writers
    if n is not None and n != config.writers:
        raise StartupError(
            f"-n/--number_of_writers {n} differs from the config's number_of_writers "
            f"({config.writers} writer(s)): stddaq takes the writer count from the config"
        )
    if args.source_suffix != "image":
        raise StartupError(
            f"-s/--source_suffix {args.source_suffix!r}: stddaq's driver deals the images of "
            f"{config.detector_name}-image only"
        )


def token_from(args: argparse.Namespace) -> str | None:
    """The API token from --token-file or the environment (None: no authentication)."""
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as file:
                token = file.read().strip()
        except OSError as error:
            raise StartupError(
                f"cannot read the token file {args.token_file}: {error.strerror}"
            ) from None
        if not token:
            raise StartupError(f"the token file {args.token_file} is empty")
        return token
    from_env = os.environ.get(ENV_TOKEN, "").strip()
    return from_env or None


def keep_acquisition_ids(board: StatusBoard, store: AcquisitionIdStore) -> None:
    """Number the board's acquisitions on from the stored last id, and store every new one."""
    board.update(replace(board.snapshot(), acquisition_id=store.last()))
    board.add_listener(lambda: store.remember(board.snapshot().acquisition_id))


class DriverService:
    """The built driver: threads not started yet."""

    def __init__(self, config: DaqConfig, args: argparse.Namespace, stats: Stats) -> None:
        check_std_daq_options(config, args)
        roots = allowed_roots_from(args)
        if not roots:
            raise StartupError(
                f"no allowed roots: give --allowed-root DIR (repeatable) or {ENV_ALLOWED_ROOTS}"
                " (':'-separated); acquisitions can only write below them"
            )
        try:
            policy = PathPolicy(roots)
        except ValueError as error:
            raise StartupError(str(error)) from None
        auth = TokenAuth(token_from(args))
        try:
            self._lock = InstanceLock(config.ipc_dir, config.detector_name)
        except InstanceLockError as error:
            raise StartupError(str(error)) from None
        self._engine: Engine | None = None
        self._web: WebServer | None = None
        try:
            board = StatusBoard(config.writers)
            if args.state_dir:
                keep_acquisition_ids(board, AcquisitionIdStore(args.state_dir, config.detector_name))
            self._engine = Engine(
                config, board, engine_counters(stats), maybe_emit_stats=stats.maybe_emit
            )
            control = DriverControl(
                config,
                config_path=args.config,
                persist_config=not args.no_save_config,
                board=board,
                engine=self._engine,
                path_policy=policy,
                counters=web_counters(stats),
                stats=stats,
            )
            rest_listener = bind_listener(args.bind_addr, args.rest_port, "REST API")
            try:
                ws_listener = bind_listener(args.bind_addr, args.ws_port, "WebSocket")
            except StartupError:
                rest_listener.close()
                raise
            self._web = WebServer(
                create_app(control, auth), WsProtocol(control, auth), rest_listener, ws_listener,
                http_protocol=rest_protocol(control),
            )
        except BaseException:
            self.close()
            raise
        self._engine_stop = threading.Event()
        self._engine_failure: BaseException | None = None
        self._engine_thread = threading.Thread(
            target=self._run_engine, name="driver-dealer", daemon=True
        )
        log.info(
            "REST API on http://%s:%d%s, WebSocket on ws://%s:%d, %d writer(s), allowed "
            "roots %s, authentication %s",
            args.bind_addr, self._web.rest_port, API_PREFIX, args.bind_addr, self._web.ws_port,
            config.writers, ", ".join(policy.allowed_roots), "on" if auth.enabled else "off",
        )

    def _run_engine(self) -> None:
        assert self._engine is not None
        try:
            self._engine.run(self._engine_stop)
        except BaseException as error:
            self._engine_failure = error
            log.exception("the image-dealing thread failed")

    def run(self, stop: threading.Event) -> None:
        """Start the dealing and web threads; return when `stop` is set (or one failed)."""
        assert self._web is not None
        self._engine_thread.start()
        self._web.start()
        try:
            while not stop.wait(WATCH_PERIOD_S):
                if not self._engine_thread.is_alive():
                    raise RuntimeError(f"the image-dealing thread ended: {self._engine_failure}")
                if not self._web.is_alive():
                    raise RuntimeError(f"the web thread ended: {self._web.failure}")
        finally:
            self._web.stop()
            self._engine_stop.set()
            if self._engine_thread.is_alive():
                self._engine_thread.join(15.0)

    def close(self) -> None:
        """Release the sockets and the instance lock."""
        if self._engine is not None:
            self._engine.close()
        self._lock.close()


def build(config: DaqConfig, args: argparse.Namespace, stats: Stats) -> DriverService:
    """run_service's build(): the driver for this config and these options."""
    return DriverService(config, args, stats)
