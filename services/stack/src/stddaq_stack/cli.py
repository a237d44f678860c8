"""`stddaq up CONFIG` (the whole stack as local processes) and `stddaq acquire` (the client)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
from types import FrameType
from typing import Any

from stddaq_common.config.model import ConfigError, DaqConfig, load_config
from stddaq_common.wire.compression import FILE_COMPRESSIONS
from stddaq_stack.leftovers import remove_leftovers
from stddaq_stack.progress import progress_line, watch
from stddaq_stack.rest_client import DriverClient, DriverError
from stddaq_stack.stack_spec import (
    DEFAULT_METRICS_PORT_BASE,
    CameraOptions,
    StackOptions,
    loopback,
    stack_specs,
)
from stddaq_stack.supervisor import StackError, Supervisor

_Subparsers = Any  # argparse's _SubParsersAction is private


def register_up(commands: _Subparsers) -> None:
    """Add `stddaq up`."""
    up = commands.add_parser("up", help="run a detector's whole stack as supervised local processes")
    up.add_argument("config", metavar="CONFIG", help="the DAQ config file")
    up.add_argument("--fake-camera", action="store_true", help="also run the fake PCO camera")
    up.add_argument("--camera-rate", type=float, default=100.0, metavar="HZ")
    up.add_argument("--camera-port", type=int, default=9990, metavar="PORT")
    up.add_argument(
        "--camera-address",
        default=None,
        metavar="ADDR",
        help="the camera's stream address (default: the fake camera's, tcp://127.0.0.1:PORT)",
    )
    up.add_argument("-n", "--connections", type=int, default=4, help="receiver connections (default 4)")
    up.add_argument("--input-format", choices=("bsread", "array-1.0"), default="bsread")
    up.add_argument("--input-reader", choices=("zmtp", "zmq"), default=None,
                    help="the receiver's --input-reader (default: the receiver's, zmtp for tcp)")
    up.add_argument("--rest-port", type=int, default=5000)
    up.add_argument("--ws-port", type=int, default=8080)
    up.add_argument("--bind-addr", default="127.0.0.1")
    up.add_argument(
        "--allowed-root",
        action="append",
        default=None,
        metavar="DIR",
        help="directory acquisitions may write below (repeatable; default: the current directory)",
    )
    up.add_argument(
        "--metrics-port-base",
        type=int,
        default=DEFAULT_METRICS_PORT_BASE,
        metavar="PORT",
        help="Prometheus metrics: receiver on PORT, driver PORT+1, live stream i PORT+10+i, "
        f"writer k PORT+100+k (default {DEFAULT_METRICS_PORT_BASE}; 0: free ports, shown in "
        "each READY line)",
    )
    up.add_argument("--no-metrics", action="store_true", help="serve no metrics endpoints")
    up.add_argument("--metrics-addr", default="127.0.0.1", help="address the metrics ports bind")
    up.add_argument("--status-every", type=float, default=30.0, metavar="S", help="status table period")
    up.add_argument(
        "--web-port",
        type=int,
        default=None,
        metavar="PORT",
        help="port of the web page (default: a free port, printed when the stack is up)",
    )
    up.add_argument("--no-web", action="store_true", help="do not start the web page")
    up.add_argument(
        "--token-file",
        default=None,
        metavar="FILE",
        help="file with the bearer token the driver requires for start, stop and config changes "
        "(the web page is read-only without it; default: no token)",
    )
    up.set_defaults(func=run_up)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the kernel's choice)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def options_from(args: argparse.Namespace) -> StackOptions:
    """StackOptions from the `stddaq up` arguments."""
    web = not getattr(args, "no_web", False)
    web_port = getattr(args, "web_port", None)
    token_file = getattr(args, "token_file", None)
    camera = CameraOptions(port=args.camera_port, rate_hz=args.camera_rate) if args.fake_camera else None
    address = args.camera_address or f"tcp://127.0.0.1:{args.camera_port}"
    return StackOptions(
        camera_address=address,
        connections=args.connections,
        input_format=args.input_format,
        input_reader=args.input_reader,
        rest_port=args.rest_port,
        ws_port=args.ws_port,
        bind_addr=args.bind_addr,
        allowed_roots=args.allowed_root or [os.getcwd()],
        fake_camera=camera,
        metrics_port_base=None if args.no_metrics else args.metrics_port_base,
        metrics_addr=args.metrics_addr,
        token_file=os.path.abspath(token_file) if token_file else None,
        web_port=(web_port if web_port is not None else free_port()) if web else None,
    )


def _install_stop_handlers(stop: threading.Event) -> None:
    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


def shutdown(supervisor: Supervisor, config: DaqConfig) -> int:
    """Stop every service, remove what a crashed one left behind, say what happened."""
    codes = supervisor.stop()
    unclean = {name: code for name, code in codes.items() if code not in (0, None)}
    removed = remove_leftovers(config)
    for path in removed:
        supervisor.say(f"removed {path} left behind")
    if unclean:
        supervisor.say("services that did not exit cleanly: " + json.dumps(unclean))
    supervisor.say("stopped")
    return 1 if unclean else 0


def run_up(args: argparse.Namespace) -> int:
    """Start the stack, supervise it until Ctrl-C or SIGTERM, then stop it clean."""
    try:
        config = load_config(args.config)
    except ConfigError as error:
        for line in error.lines:
            print(line, file=sys.stderr)
        return 2
    options = options_from(args)
    try:
        specs = stack_specs(os.path.abspath(args.config), config, options)
    except ValueError as error:
        print(f"stddaq up: {error}", file=sys.stderr)
        return 2
    supervisor = Supervisor(specs)
    stop = threading.Event()
    _install_stop_handlers(stop)
    try:
        supervisor.start()
    except StackError as error:
        print(f"stddaq up: {error}", file=sys.stderr)
        remove_leftovers(config)
        return 1
    supervisor.say(
        f"stack of {config.detector_name} is up: REST http://{args.bind_addr}:{args.rest_port}/api/v1, "
        f"WebSocket ws://{args.bind_addr}:{args.ws_port}"
        + (f", web page http://{loopback(args.bind_addr)}:{options.web_port}/" if options.web_port else "")
        + "; Ctrl-C stops it\n"
        + supervisor.table()
    )
    supervisor.run(stop, args.status_every)
    return shutdown(supervisor, config)


def register_acquire(commands: _Subparsers) -> None:
    """Add `stddaq acquire`."""
    acquire = commands.add_parser(
        "acquire", help="start, stop, show or watch an acquisition through the driver's REST API"
    )
    acquire.add_argument("--url", default=os.environ.get("STDDAQ_URL", "http://127.0.0.1:5000"))
    acquire.add_argument("--token", default=os.environ.get("STDDAQ_TOKEN"))
    action = acquire.add_mutually_exclusive_group()
    action.add_argument("--stop", action="store_true", help="stop the running acquisition")
    action.add_argument("--status", action="store_true", help="print the status as JSON")
    action.add_argument("--watch", action="store_true", help="watch the current acquisition")
    acquire.add_argument("--path", help="directory the files go to (starts an acquisition)")
    acquire.add_argument(
        "--n-images", type=int, default=None, help="images to write (default: until stopped)"
    )
    acquire.add_argument("--prefix", default=None, help="file prefix (default: file)")
    acquire.add_argument("--compression", choices=FILE_COMPRESSIONS, default=None)
    acquire.add_argument("--uid", type=int, default=None, help="uid the files are written as")
    acquire.add_argument("--no-watch", action="store_true", help="start and return at once")
    acquire.set_defaults(func=run_acquire)


def _summary(status: dict[str, Any]) -> str:
    files = status.get("master_file") or ", ".join(status.get("files", []))
    text = (
        f"{status.get('outcome')}: {status.get('images_written')} images written, "
        f"{status.get('images_missing')} missing, files: {files}"
    )
    if status.get("last_error"):
        text += f"\nerror: {status['last_error']}"
    return text


def run_acquire(args: argparse.Namespace) -> int:
    """The `stddaq acquire` command."""
    client = DriverClient(args.url, args.token)
    try:
        if args.stop:
            print(progress_line(client.stop(), 0.0))
            return 0
        if args.status:
            print(json.dumps(client.status(), indent=2))
            return 0
        if args.watch:
            current = client.status()
            final = watch(client, int(current["acquisition_id"]), out=sys.stderr)
            print(_summary(final))
            return 0 if final.get("outcome") == "file_saved" else 1
        if not args.path:
            print("stddaq acquire: give --path to start, or --stop, --status, --watch", file=sys.stderr)
            return 2
        started = client.start(
            path=os.path.abspath(args.path),
            n_image=args.n_images,
            file_prefix=args.prefix,
            compression=args.compression,
            writer_id=args.uid,
        )
        print(f"acquisition {started['acquisition_id']} started: {', '.join(started['files'])}")
        if args.no_watch:
            return 0
        final = watch(client, int(started["acquisition_id"]), out=sys.stderr)
        print(_summary(final))
        return 0 if final.get("outcome") == "file_saved" else 1
    except DriverError as error:
        print(f"stddaq acquire: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstddaq acquire: stopped watching (the acquisition goes on; --stop ends it)", file=sys.stderr)
        return 130
