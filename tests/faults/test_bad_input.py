"""Bad input to the driver: schemathesis against its live OpenAPI document (no 5xx, no
hang), garbage on the WebSocket (error replies, the connection and the driver live on),
config keys that mean something to pydantic-settings. A real driver process, no writers.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.common.configs import pco_config
from tests.faults.rig import PYTHON, free_port, stop_pid, wait_for

EXAMPLES = int(os.environ.get("STDDAQ_API_FUZZ_EXAMPLES", "100"))
"""Examples per operation and mode (8 operations x valid/invalid: well under a minute)."""
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Driver:
    """A driver process of its own and where it serves."""

    process: subprocess.Popen[str]
    rest: str
    ws: str
    root: Path
    config_path: Path

    def alive(self) -> bool:
        """The process runs and answers /health."""
        if self.process.poll() is not None:
            return False
        try:
            return bool(httpx.get(f"{self.rest}/api/v1/health", timeout=10).json()["ok"])
        except httpx.HTTPError:
            return False


@pytest.fixture(scope="module")
def driver() -> Iterator[Driver]:
    base = Path(tempfile.mkdtemp(prefix="flt-api-", dir="/tmp"))
    root = base / "data"
    root.mkdir()
    config = pco_config(f"api-{uuid.uuid4().hex[:8]}", ipc_dir=str(base))
    config_path = base / "daq.json"
    config_path.write_text(json.dumps(config))
    rest_port, ws_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            PYTHON, "-m", "stddaq_driver", str(config_path), "--allowed-root", str(root), "--no-save-config",
            "--rest-port", str(rest_port), "--ws-port", str(ws_port),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None and process.stdout.readline().startswith("READY driver")
        yield Driver(
            process, f"http://127.0.0.1:{rest_port}", f"ws://127.0.0.1:{ws_port}/", root, config_path
        )
        assert process.poll() is None, "the driver died during the bad-input tests"
    finally:
        stop_pid(process, signal.SIGTERM)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def live_schema(driver: Driver) -> Any:
    """The OpenAPI document the running driver serves."""
    return schemathesis.openapi.from_url(f"{driver.rest}/openapi.json")


def _operations() -> list[tuple[str, str, GenerationMode]]:
    """(method, path, mode) of every operation of the committed document (a golden test keeps
    it equal to the live one): valid inputs for all, invalid ones where there is an input."""
    document = json.loads((REPO / "docs" / "openapi.json").read_text())
    cases = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            cases.append((method.upper(), path, GenerationMode.POSITIVE))
            if "requestBody" in operation or operation.get("parameters"):
                cases.append((method.upper(), path, GenerationMode.NEGATIVE))
    return cases


OPERATIONS = _operations()


@pytest.mark.parametrize(
    ("method", "path", "mode"), OPERATIONS, ids=[f"{m} {p} {g.value}" for m, p, g in OPERATIONS]
)
def test_rest_api_never_answers_5xx_nor_hangs(
    live_schema: Any, driver: Driver, method: str, path: str, mode: GenerationMode
) -> None:
    operation = live_schema[path][method]

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: Any) -> None:
        response = case.call(base_url=driver.rest, timeout=10)  # a hang fails as a timeout
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} {case.body!r}: {response.text}"
        )

    call()


def test_the_driver_survived_the_api_fuzzing(driver: Driver) -> None:
    assert driver.alive()


@pytest.mark.parametrize(
    "changes",
    [
        {"_cli_parse_args": ["--help"]},
        {"_cli_parse_args": True},
        {"_env_file": "/etc/passwd", "_secrets_dir": "/etc"},
        {"number_of_writers": 10**9},
        {"image_pixel_height": 2**40, "image_pixel_width": 2**40},
        {"ram_buffer_gb": 1e308},
        {"live_stream_configs": {"tcp://127.0.0.1:99999": {"type": "forward"}}},
    ],
    ids=["cli-help", "cli-args", "env-file", "writers-1e9", "huge-image", "huge-ring", "bad-port"],
)
def test_config_changes_that_could_hurt_are_refused_or_harmless(
    driver: Driver, changes: dict[str, Any]
) -> None:
    answer = httpx.patch(f"{driver.rest}/api/v1/config", json=changes, timeout=30)
    assert answer.status_code in (200, 409, 422), answer.text
    assert driver.alive()
    httpx.put(f"{driver.rest}/api/v1/config", json=json.loads(driver.config_path.read_text()), timeout=30)


def _garbage(rng: random.Random) -> str | bytes:
    choices: list[str | bytes] = [
        rng.randbytes(rng.randrange(1, 300)),
        "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(1, 80))),
        json.dumps(rng.choice([[], 1, None, "start", {"command": None}, {"command": ["start"]}])),
        json.dumps({"command": "start", "path": rng.choice([None, 5, "", "relative", "/etc", "/" * 500])}),
        json.dumps({"command": "start", "path": "/x", "n_image": rng.choice([-1, 0.5, "10", 2**80, True])}),
        json.dumps({"command": "start", "path": "/x", "unknown": 1}),
        json.dumps({"command": "stop", "extra": {"deep": [1] * 50}}),
        "{" * 200,
        '{"command": "start", "path": "\\ud800"}',
    ]
    return rng.choice(choices)


def _answer(ws: ClientConnection) -> dict[str, Any]:
    """The next reply that is not a periodic status message."""
    while True:
        message = json.loads(ws.recv(timeout=10))
        if message["status"] in ("error", "rejected"):
            return dict(message)


def test_websocket_garbage_gets_error_replies_and_the_connection_lives_on(driver: Driver) -> None:
    rng = random.Random(11)
    with connect(driver.ws, open_timeout=10) as ws:
        for _ in range(200):
            ws.send(_garbage(rng))
            reply = _answer(ws)
            assert reply["reason"], reply
        ws.send(json.dumps({"command": "stop"}))  # a valid command still works
        assert "no acquisition to stop" in _answer(ws)["reason"]
    with connect(driver.ws, open_timeout=10, max_size=None) as ws:
        ws.send("x" * (65 * 1024))  # over the 64 KiB limit: this client is closed (1009)
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=10)
    assert ws.close_code == 1009
    assert wait_for("the driver answering after the garbage", driver.alive, timeout=30)
    stats = httpx.get(f"{driver.rest}/api/v1/stats", timeout=10).json()
    assert stats["ws_bad_messages"] >= 150
