"""A viewer for diagnostics: what arrives from a live stream, how fast, and which ids are missing.

    python -m stddaq_live_stream.probe tcp://127.0.0.1:20000 [--seconds 5] [--json]

It subscribes like any viewer, reads array-1.0 (`frame`) or BSREAD (`pulse_id`) headers,
and counts messages, bytes and gaps between consecutive ids (a gap is an image the rate
mode skipped, or one ZeroMQ dropped because this viewer's queue was full). The pixels are
not touched. Light on purpose: it imports nothing but pyzmq.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass

import zmq


@dataclass
class ProbeResult:
    """What a probe saw between its first and its last message."""

    address: str
    messages: int = 0
    bytes: int = 0
    seconds: float = 0.0
    first_id: int | None = None
    last_id: int | None = None
    skipped_ids: int = 0
    """Sum of the gaps between consecutive ids (ids that did not arrive)."""
    undecodable_headers: int = 0

    @property
    def images_per_second(self) -> float:
        """Messages per second between the first and the last (0 with fewer than two)."""
        return (self.messages - 1) / self.seconds if self.messages > 1 and self.seconds > 0 else 0.0

    def as_json(self) -> str:
        """One JSON line with every field and the rates."""
        fields = asdict(self)
        fields["images_per_second"] = self.images_per_second
        fields["gb_per_second"] = self.bytes / self.seconds / 1e9 if self.seconds > 0 else 0.0
        return json.dumps(fields)


def image_id_of(header: bytes) -> int | None:
    """`frame` (array-1.0) or `pulse_id` (BSREAD main header) of a first message part."""
    try:
        parsed = json.loads(header)
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    value = parsed.get("frame", parsed.get("pulse_id"))
    return value if type(value) is int else None


def probe(address: str, seconds: float, first_timeout_s: float = 60.0) -> ProbeResult:
    """Count what arrives at a SUB on `address` for `seconds` after the first message."""
    result = ProbeResult(address)
    sub: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(address)
    try:
        if not sub.poll(int(first_timeout_s * 1000)):
            return result
        first = last = time.perf_counter()
        while last - first < seconds and sub.poll(1000):
            parts = sub.recv_multipart(copy=False)
            last = time.perf_counter()
            result.messages += 1
            result.bytes += sum(len(part.buffer) for part in parts)
            image_id = image_id_of(parts[0].bytes)
            if image_id is None:
                result.undecodable_headers += 1
                continue
            if result.last_id is not None and image_id > result.last_id + 1:
                result.skipped_ids += image_id - result.last_id - 1
            if result.first_id is None:
                result.first_id = image_id
            result.last_id = image_id
        result.seconds = last - first
        return result
    finally:
        sub.close(linger=0)


def main(argv: list[str] | None = None) -> int:
    """Probe a live stream and print one line (0: something arrived, 1: nothing did)."""
    parser = argparse.ArgumentParser(prog="stddaq_live_stream.probe", description=__doc__.split("\n")[0])
    parser.add_argument("address", help="the live stream's address, e.g. tcp://127.0.0.1:20000")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to count (default 5)")
    parser.add_argument("--wait", type=float, default=60.0, help="how long to wait for the first message")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    result = probe(args.address, args.seconds, args.wait)
    if args.json:
        print(result.as_json())
    elif result.messages == 0:
        print(f"{args.address}: nothing arrived within {args.wait:g} s")
    else:
        megabytes_per_second = result.bytes / max(result.seconds, 1e-9) / 1e6
        print(
            f"{args.address}: {result.messages} images in {result.seconds:.2f} s "
            f"({result.images_per_second:.1f} images/s, {megabytes_per_second:.1f} MB/s), "
            f"ids {result.first_id}..{result.last_id}, {result.skipped_ids} ids not received"
        )
    return 0 if result.messages else 1


if __name__ == "__main__":
    sys.exit(main())
