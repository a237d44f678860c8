"""GET /status answered before h11 and FastAPI (status_protocol.py): the
same bytes as the app's route, every other request still the app's.

A real driver process, raw requests over real TCP connections. Without writers and without a
receiver the status body is the same from one request to the next (no ages), so the shortcut's
answer can be compared byte for byte with the route's: a request announcing an empty body
(`Content-Length: 0`) is not plain, so h11 and the FastAPI route answer it.
"""

from __future__ import annotations

import re
import shutil
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from stddaq_driver.models import StatusResponse
from stddaq_driver.status_protocol import plain_get
from tests.driver.fake_writer import FakeWriter
from tests.driver.harness import (
    DEADLINE_S,
    DriverProcess,
    short_tmp_dir,
    unique_detector,
    write_config,
)

TOKEN = "fast-path-token"
STATUS = b"/api/v1/status"


@pytest.fixture(scope="module")
def driver() -> Iterator[DriverProcess]:
    base = short_tmp_dir()
    root = base / "data"
    root.mkdir()
    config = write_config(base, unique_detector(), number_of_writers=2)
    process = DriverProcess(config, root, token=TOKEN)
    try:
        yield process
    finally:
        status = process.stop()
        log = process.log()
        shutil.rmtree(base, ignore_errors=True)
    assert status == 0, log


def exchange(port: int, *chunks: bytes) -> bytes:
    """Send `chunks` on one new connection (a pause between them), read until the server
    closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S) as connection:
        for k, chunk in enumerate(chunks):
            if k:
                time.sleep(0.05)
            connection.sendall(chunk)
        received = b""
        while data := connection.recv(65536):
            received += data
    return received


def without_date(response: bytes) -> bytes:
    """The response with its Date header's value blanked (it changes every second)."""
    return re.sub(rb"\r\ndate: [^\r]*\r\n", b"\r\ndate: -\r\n", response)


def responses(raw: bytes) -> list[tuple[bytes, bytes]]:
    """(head, body) of each response in `raw` (bodies by their content-length)."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        found.append((head, rest[:length]))
        raw = rest[length:]
    return found


def request(*headers: str, target: bytes = STATUS, version: bytes = b"HTTP/1.1") -> bytes:
    lines = [b"GET " + target + b" " + version, *(h.encode() for h in headers)]
    return b"\r\n".join(lines) + b"\r\n\r\n"


PLAIN_REQUESTS = {
    "urllib (close)": request(
        "Accept-Encoding: identity", "Host: x", "User-Agent: Python-urllib/3.11",
        "Content-Type: application/json", "Connection: close",
    ),
    "HTTP/1.0": request(version=b"HTTP/1.0"),
    "HTTP/1.0 with a Host": request("Host: x", version=b"HTTP/1.0"),
    "close among other tokens, odd case": request("host: x", "connection: keep-alive, Close"),
}


@pytest.mark.parametrize("name", sorted(PLAIN_REQUESTS))
def test_the_shortcut_answers_the_same_bytes_as_the_route(
    driver: DriverProcess, name: str
) -> None:
    plain = PLAIN_REQUESTS[name]
    # The same request announcing an empty body goes through h11 and the FastAPI route.
    through_app = plain[:-2] + b"Content-Length: 0\r\n\r\n"
    fast = without_date(exchange(driver.rest_port, plain))
    routed = without_date(exchange(driver.rest_port, through_app))
    assert fast == routed
    head, body = responses(fast)[0]
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\ncontent-type: application/json" in head
    assert head.endswith(b"\r\nConnection: close")
    StatusResponse.model_validate_json(body)


def test_a_request_cut_into_pieces_is_answered_once_whole(driver: DriverProcess) -> None:
    whole = request("Host: x", "Connection: close")
    pieces = exchange(driver.rest_port, whole[:9], whole[9:30], whole[30:])
    assert without_date(pieces) == without_date(exchange(driver.rest_port, whole))


def test_keep_alive_serves_several_requests_then_hands_over_to_the_app(
    driver: DriverProcess,
) -> None:
    keep = request("Host: x")
    health = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answers = responses(exchange(driver.rest_port, keep, keep, health))
    assert len(answers) == 3
    first, second = answers[0], answers[1]
    assert without_date(first[0]) == without_date(second[0])
    assert b"Connection: close" not in first[0]
    assert first[1] == second[1]
    StatusResponse.model_validate_json(first[1])
    assert b'"ok":true' in answers[2][1]


def test_pipelined_requests_are_answered_in_order_by_h11(driver: DriverProcess) -> None:
    two = request("Host: x") + b"GET /api/v1/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answers = responses(exchange(driver.rest_port, two))
    assert len(answers) == 2
    StatusResponse.model_validate_json(answers[0][1])
    assert b"images_dealt" in answers[1][1] and b'"state"' not in answers[1][1][:10]


@pytest.mark.parametrize(
    ("raw", "status_line"),
    [
        (b"HEAD /api/v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"405"),
        (b"POST /api/v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
         b"Connection: close\r\n\r\n", b"405"),
        (request("Host: x", "Connection: close", target=b"/api/v1/status/"), b"307"),
        (request("Connection: close"), b"400"),
        (request("Host: x", "Host: y", "Connection: close"), b"400"),
        (request("Host: x", "Bad Header", "Connection: close"), b"400"),
        (request("Host: x", "Connection: close", target=b"/api/v1/nothing"), b"404"),
        (b"GET /api/v1/status HTTP/1.1\nHost: x\nConnection: close\n\n", b"200"),  # bare LFs
    ],
)
def test_every_other_request_is_answered_by_the_app_as_before(
    driver: DriverProcess, raw: bytes, status_line: bytes
) -> None:
    answer = exchange(driver.rest_port, raw)
    assert answer.startswith(b"HTTP/1.1 " + status_line + b" ")


def test_a_query_string_gets_the_same_status_through_h11(driver: DriverProcess) -> None:
    """h11 parses it and the route answers it, as it answers the same request announcing
    an empty body."""
    query = request("Host: x", "Connection: close", target=STATUS + b"?a=1")
    routed = request("Host: x", "Content-Length: 0", "Connection: close", target=STATUS + b"?a=1")
    answer = without_date(exchange(driver.rest_port, query))
    assert answer == without_date(exchange(driver.rest_port, routed))
    head, body = responses(answer)[0]
    assert head.startswith(b"HTTP/1.1 200 OK")
    StatusResponse.model_validate_json(body)


def test_state_changing_calls_still_need_the_token(driver: DriverProcess) -> None:
    with httpx.Client(base_url=driver.url, timeout=DEADLINE_S) as client:
        refused = client.post("/stop", json={})
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        allowed = client.post("/stop", json={}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert allowed.status_code == 409  # past the token check: nothing is running
        assert client.get("/status").status_code == 200  # reading never needed the token


def test_live_figures_through_a_real_client() -> None:
    """With writers heard from, every answer carries their ages: each one a valid status,
    through a keep-alive client and a new connection per request alike."""
    base = short_tmp_dir()
    root = base / "data"
    root.mkdir()
    detector = unique_detector()
    config = write_config(base, detector, number_of_writers=2)
    writers = [FakeWriter(detector, str(base / "ipc"), k) for k in range(2)]
    process = DriverProcess(config, root)
    try:
        process.wait_writers_alive()
        ages = set()
        for _ in range(5):
            status = StatusResponse.model_validate_json(process.http.get("/status").content)
            fresh = httpx.get(process.url + "/status", timeout=DEADLINE_S)
            assert fresh.headers["content-type"] == "application/json"
            assert int(fresh.headers["content-length"]) == len(fresh.content)
            StatusResponse.model_validate_json(fresh.content)
            assert all(writer.alive for writer in status.writers)
            ages.add(status.writers[0].seconds_since_heard)
            time.sleep(0.02)
        assert len(ages) > 1  # computed at each request, not a stale copy
    finally:
        exit_status = process.stop()
        for writer in writers:
            writer.close()
        shutil.rmtree(base, ignore_errors=True)
    assert exit_status == 0


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"GET /s HTTP/1.1\r\nHost: x", False),
        (b"GET /s HTTP/1.1\r\nHost: x\r\nConnection: close", True),
        (b"GET /s HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive,  CLOSE ", True),
        (b"GET /s HTTP/1.0", True),
        (b"GET /s HTTP/1.1", None),  # no Host: h11 refuses it
        (b"GET /s HTTP/1.1\r\nHost: x\r\nHost: x", None),
        (b"GET /s?x=1 HTTP/1.1\r\nHost: x", None),
        (b"GET /t HTTP/1.1\r\nHost: x", None),
        (b"HEAD /s HTTP/1.1\r\nHost: x", None),
        (b"GET /s HTTP/2\r\nHost: x", None),
        (b"GET /s HTTP/1.1\r\nHost: x\r\nContent-Length: 0", None),
        (b"GET /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked", None),
        (b"GET /s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket", None),
        (b"GET /s HTTP/1.1\r\nHost: x\r\nExpect: 100-continue", None),
        (b"GET /s HTTP/1.1\r\nHost: x\r\n folded", None),
        (b"GET /s HTTP/1.1\r\nHost : x", None),
        (b"GET  /s HTTP/1.1\r\nHost: x", None),
    ],
)
def test_only_a_plain_get_is_taken(head: bytes, expected: bool | None) -> None:
    assert plain_get(head, b"/s") is expected
