"""The stddaq demo (`make demo`): the whole stack of a PCO camera on this machine.

Starts the stack (fake PCO camera, receiver, writers, driver, live stream, web page) as local
processes on an embedded default config, records an acquisition through the REST API,
checks the file pixel by pixel, prints a summary and stops. `--keep-running` leaves the
stack up for you to play with (Ctrl-C stops it). No Docker needed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stddaq_common.config.model import load_config
from stddaq_fake_camera.frames import FramePattern
from stddaq_stack.cli import shutdown
from stddaq_stack.progress import watch
from stddaq_stack.rest_client import DriverClient, DriverError
from stddaq_stack.stack_spec import (
    DEFAULT_METRICS_PORT_BASE,
    CameraOptions,
    StackOptions,
    stack_specs,
)
from stddaq_stack.supervisor import StackError, Supervisor

REPO = Path(__file__).resolve().parents[1]
LIVE_ADDRESS = "tcp://127.0.0.1:20000"

DEMO_CONFIG: dict[str, Any] = {
    "detector_name": "stddaq-demo",
    "detector_type": "pco",
    "n_modules": 1,
    "bit_depth": 16,
    "image_pixel_height": 1024,
    "image_pixel_width": 1024,
    "start_udp_port": 0,
    "module_positions": {},
    "number_of_writers": 2,
    "stats_collection_period": 5,
    "live_stream_configs": {LIVE_ADDRESS: {"type": "periodic", "config": [1, 5]}},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(REPO / "data" / "demo"), help="folder for config and files")
    parser.add_argument("--images", type=int, default=300, help="images to record (default 300)")
    parser.add_argument("--rate", type=float, default=100.0, help="camera frame rate in Hz (default 100)")
    parser.add_argument("--compression", choices=("none", "bitshuffle_lz4"), default="none")
    parser.add_argument("--rest-port", type=int, default=5000)
    parser.add_argument("--ws-port", type=int, default=8080)
    parser.add_argument("--camera-port", type=int, default=9990)
    parser.add_argument(
        "--metrics-port-base", type=int, default=DEFAULT_METRICS_PORT_BASE,
        help="Prometheus ports: receiver PORT, driver PORT+1, live PORT+10+i, writer PORT+100+k",
    )
    parser.add_argument("--web-port", type=int, default=8090, help="port of the web page (default 8090)")
    parser.add_argument("--keep-running", action="store_true", help="leave the stack up after the demo")
    return parser.parse_args(argv)


def check_file(path: str, detector: str, shape: tuple[int, int]) -> tuple[int, int]:
    """Read every image back and compare it with the camera's frame of its id.

    Returns (images checked, images that differ)."""
    pattern = FramePattern(shape, np.dtype("<u2"))
    bad = 0
    with h5py.File(path, "r") as file:
        data = file[f"{detector}/data"]
        ids = file[f"{detector}/metadata"]["image_id"]
        if len(ids) and np.any(np.diff(ids.astype(np.int64)) <= 0):
            raise SystemExit(f"demo: image ids in {path} are not strictly increasing")
        for index, image_id in enumerate(ids):
            if not np.array_equal(data[index], pattern.frame(int(image_id))):
                bad += 1
        return len(ids), bad


def run_demo(args: argparse.Namespace, supervisor: Supervisor, config_path: Path) -> int:
    config = load_config(config_path)
    client = DriverClient(f"http://127.0.0.1:{args.rest_port}")
    run_dir = Path(args.data) / time.strftime("run-%Y%m%d-%H%M%S")
    print(f"\n[demo] web page: http://127.0.0.1:{args.web_port}/", flush=True)
    print(f"[demo] recording {args.images} images to {run_dir} ...", flush=True)
    started_at = time.monotonic()
    started = client.start(path=str(run_dir), n_image=args.images, compression=args.compression)
    final = watch(client, int(started["acquisition_id"]), out=sys.stderr, timeout=120 + args.images / 10)
    seconds = time.monotonic() - started_at
    target = final.get("master_file") or final["files"][0]
    checked, bad = 0, 0
    if final["outcome"] == "file_saved":
        shape = (config.image_pixel_height, config.image_pixel_width)
        checked, bad = check_file(target, config.detector_name, shape)
    written = int(final["images_written"])
    mib = written * config.image_pixel_height * config.image_pixel_width * 2 / 2**20
    print(
        "\n".join(
            [
                "",
                "stddaq demo summary",
                f"  outcome           {final['outcome']}"
                + (f" ({final['last_error']})" if final["last_error"] else ""),
                f"  images written    {written} of {args.images} requested, "
                f"{final['images_missing']} missing",
                f"  checked           {checked} images read back, {bad} differ from the camera's frames",
                f"  rate              {written / seconds:.1f} images/s, {mib / seconds:.1f} MiB/s "
                f"(camera at {args.rate:g} Hz, {seconds:.1f} s from start to file saved)",
                f"  files             {', '.join(final['files'])}",
                f"  master file       {final.get('master_file') or '-'}",
                f"  open it           python -c \"import h5py; f = h5py.File('{target}'); "
                f"print(f['{config.detector_name}/data'])\"",
                f"                    h5dump -H {target}",
                f"  live stream       array-1.0 at {LIVE_ADDRESS} (periodic: 1 image 5 times a second)",
                f"  REST API          http://127.0.0.1:{args.rest_port}/api/v1/status "
                f"(docs at http://127.0.0.1:{args.rest_port}/docs)",
                f"  web page          http://127.0.0.1:{args.web_port}/ (live image, acquisition, health)",
                f"  metrics           http://127.0.0.1:{args.metrics_port_base}/metrics (receiver), "
                f"+1 driver, +10 live stream, +100 writer 0 (deploy/prometheus.yml)",
                "",
                supervisor.table(),
            ]
        ),
        flush=True,
    )
    ok = final["outcome"] == "file_saved" and written == args.images and checked == written and bad == 0
    if not ok:
        print("[demo] FAILED: the acquisition did not record every image exactly", file=sys.stderr)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = Path(args.data).resolve()
    data.mkdir(parents=True, exist_ok=True)
    config_path = data / "stddaq-demo.json"
    config_path.write_text(json.dumps(DEMO_CONFIG, indent=2) + "\n")
    config = load_config(config_path)
    options = StackOptions(
        camera_address=f"tcp://127.0.0.1:{args.camera_port}",
        rest_port=args.rest_port,
        ws_port=args.ws_port,
        allowed_roots=[str(data)],
        fake_camera=CameraOptions(port=args.camera_port, rate_hz=args.rate),
        metrics_port_base=args.metrics_port_base,
        web_port=args.web_port,
    )
    supervisor = Supervisor(stack_specs(str(config_path), config, options))
    print(f"[demo] starting the stack of {config.detector_name} (config {config_path})", flush=True)
    try:
        supervisor.start()
    except StackError as error:
        print(f"[demo] the stack did not start: {error}", file=sys.stderr)
        shutdown(supervisor, config)
        return 1
    status = 1
    stop = threading.Event()
    try:
        status = run_demo(args, supervisor, config_path)
        if args.keep_running:
            print(
                "[demo] the stack keeps running; try `stddaq acquire --path "
                f"{data}/mine --n-images 100`; Ctrl-C stops it",
                flush=True,
            )
            with contextlib.suppress(KeyboardInterrupt):
                supervisor.run(stop, 30.0)
    except (DriverError, TimeoutError) as error:
        print(f"[demo] {error}", file=sys.stderr)
    except KeyboardInterrupt:
        print("[demo] interrupted", file=sys.stderr)
    finally:
        if shutdown(supervisor, config) != 0:
            status = status or 1
    return status


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
