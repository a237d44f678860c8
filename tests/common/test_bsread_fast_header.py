"""The main-header fast path gives exactly what the JSON path gives, or steps aside.

Reference: json.loads plus the BSREAD rules (written out here, independently of the codec).
Every generated header goes through the codec's main-header parser (fast path first, JSON
otherwise) and must give the reference's values or, when the reference rejects it,
WireFormatError; headers in the two known layouts must take the fast path.
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stddaq_common.wire.bsread import BsreadDecoder, BsreadEncoder, ChannelSpec, _parse_main_header
from stddaq_common.wire.bsread_fast_header import match_main_header
from stddaq_common.wire.errors import WireFormatError

EXAMPLES = int(os.environ.get("STDDAQ_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                database=None)


def reference(raw: bytes) -> tuple[int, tuple[int, int], str, str] | None:
    """What a main header means by the BSREAD rules, or None if it is not a valid one."""
    try:
        header = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(header, dict) or header.get("htype") != "bsr_m-1.1":
        return None
    stamp = header.get("global_timestamp")
    if not isinstance(stamp, dict):
        return None
    values = (header.get("pulse_id"), stamp.get("sec", stamp.get("epoch")), stamp.get("ns"))
    limits = (2**64, 2**63, 2**63)
    if not all(type(v) is int and 0 <= v < limit for v, limit in zip(values, limits, strict=True)):
        return None
    digest, compression = header.get("hash"), header.get("dh_compression") or "none"
    if not isinstance(digest, str) or not digest or compression not in ("none", "bitshuffle_lz4", "lz4"):
        return None
    pulse, sec, ns = values
    assert isinstance(pulse, int) and isinstance(sec, int) and isinstance(ns, int)
    return pulse, (sec, ns), digest.lower(), compression


def parsed(raw: bytes) -> tuple[int, tuple[int, int], str, str] | None:
    """The codec's reading of a main header (None: it raised WireFormatError)."""
    try:
        header = _parse_main_header(memoryview(raw))
    except WireFormatError:
        return None
    return header.pulse_id, header.global_timestamp, header.hash, header.dh_compression


numbers = st.one_of(st.integers(0, 2**64 + 5), st.sampled_from([0, 2**63 - 1, 2**63, 2**64 - 1, 2**64]))
whitespace = st.sampled_from(["", " ", "  ", "\n", "\t", "\r\n "])
hashes = st.one_of(st.text("0123456789abcdefABCDEF", min_size=1, max_size=40), st.sampled_from(["", "xyz"]))
compressions = st.sampled_from([None, "none", "lz4", "bitshuffle_lz4", "zstd", "null"])


@st.composite
def headers(draw: st.DrawFn) -> bytes:
    """A main header in one of the two known layouts, with random spacing and values."""
    ws = [draw(whitespace) for _ in range(40)]
    pulse, sec, ns = draw(numbers), draw(numbers), draw(numbers)
    digest, compression = draw(hashes), draw(compressions)
    members: list[tuple[str, str]] = [("htype", '"bsr_m-1.1"')]
    stamp = f'{{{ws[0]}"sec"{ws[1]}:{ws[2]}{sec}{ws[3]},{ws[4]}"ns"{ws[5]}:{ws[6]}{ns}{ws[7]}}}'
    compressed = "null" if compression == "null" else json.dumps(compression)
    if draw(st.booleans()):  # std_daq's order
        members += [("pulse_id", str(pulse)), ("global_timestamp", stamp), ("hash", json.dumps(digest))]
        if compression is not None:
            members.append(("dh_compression", compressed))
    else:  # psi-bsread's order
        if compression is not None:
            members.append(("dh_compression", compressed))
        members += [("hash", json.dumps(digest)), ("pulse_id", str(pulse)), ("global_timestamp", stamp)]
    body = ",".join(
        f'{ws[8 + 3 * i]}"{key}"{ws[9 + 3 * i]}:{ws[10 + 3 * i]}{value}'
        for i, (key, value) in enumerate(members)
    )
    return f"{{{body}{ws[39]}}}".encode()


@FUZZ
@given(headers())
def test_known_layouts_match_the_json_reading(raw: bytes) -> None:
    expected = reference(raw)
    assert parsed(raw) == expected
    hex_hash = expected is not None and all(c in "0123456789abcdef" for c in expected[2])
    if hex_hash and b"null" not in raw:  # a null dh_compression is left to the JSON path
        assert match_main_header(raw) is not None, "a known layout missed the fast path"


@FUZZ
@given(headers(), st.data())
def test_mutated_headers_are_read_as_json_reads_them(raw: bytes, data: st.DataObject) -> None:
    """Edits a JSON parser may see differently (leading zeros, signs, floats, escapes, extra
    members, duplicated keys, truncation) never make the fast path disagree."""
    text = raw.decode()
    position = data.draw(st.integers(0, len(text)))
    edit = data.draw(st.sampled_from(["0", "-", ".5", "e3", "\\u0041", ',"x":1', "}", '"', " ", ""]))
    cut = data.draw(st.integers(0, 2))
    mutated = (text[:position] + edit + text[position + cut :]).encode()
    assert parsed(mutated) == reference(mutated)


def test_the_senders_main_headers_take_the_fast_path() -> None:
    encoder = BsreadEncoder([ChannelSpec.for_image("cam", 4, 4)], dh_compression="lz4")
    ours = bytes(encoder.encode(12, (1_700_000_000, 5), [None])[0])  # type: ignore[arg-type]
    assert match_main_header(ours) == (12, 1_700_000_000, 5, encoder.hash, "lz4")
    psi: dict[str, Any] = {"htype": "bsr_m-1.1", "dh_compression": "bitshuffle_lz4", "hash": "AB12"}
    psi.update(pulse_id=7, global_timestamp={"sec": 3, "ns": 4})  # psi-bsread's Sender: json.dumps
    assert match_main_header(json.dumps(psi).encode()) == (7, 3, 4, "ab12", "bitshuffle_lz4")
    epoch = json.dumps({"htype": "bsr_m-1.1", "pulse_id": 1, "global_timestamp": {"epoch": 3, "ns": 4},
                        "hash": "ab"}).encode()
    assert match_main_header(epoch) is None and parsed(epoch) == (1, (3, 4), "ab", "none")


def _head_or_error(decoder: BsreadDecoder, main: bytes, data_header: bytes) -> object:
    try:
        return decoder.head(main, data_header)
    except WireFormatError as error:
        return error.kind


def _decoded_or_error(main: bytes, data_header: bytes) -> object:
    try:
        headers = BsreadDecoder().decode_headers(main, data_header)
    except WireFormatError as error:
        return error.kind
    return headers.pulse_id, *headers.global_timestamp, headers.channels


@FUZZ
@given(st.sampled_from([0, 9, 10, 2**63 - 1]), numbers, numbers, numbers, st.booleans(), st.data())
def test_head_after_a_learned_layout_reads_what_decode_headers_reads(
    first: int, pulse: int, sec: int, ns: int, psi: bool, data: st.DataObject
) -> None:
    """`head` keeps the text of the last header's layout (only the numbers may change, see
    bsread_fast_header.same_layout); whatever the next header is (other numbers, digit
    counts, limits, a byte edited), it reads it as a fresh decode_headers does."""
    encoder = BsreadEncoder([ChannelSpec.for_image("cam", 4, 4)], dh_compression="none")
    data_header = bytes(encoder.data_header)

    def main(p: int, s: int, n: int) -> bytes:
        stamp = {"sec": s, "ns": n}
        members: dict[str, Any] = (
            {"htype": "bsr_m-1.1", "hash": encoder.hash, "pulse_id": p, "global_timestamp": stamp} if psi
            else {"htype": "bsr_m-1.1", "pulse_id": p, "global_timestamp": stamp, "hash": encoder.hash}
        )
        return json.dumps(members, separators=(", ", ": ") if psi else (",", ":")).encode()

    decoder = BsreadDecoder()
    learned = main(first, 1_700_000_000, 5)
    assert _head_or_error(decoder, learned, data_header) == _decoded_or_error(learned, data_header)
    assert _head_or_error(decoder, learned, data_header) == _decoded_or_error(learned, data_header)
    text = main(pulse, sec, ns).decode()
    if data.draw(st.booleans()):  # and maybe one edit
        position = data.draw(st.integers(0, len(text)))
        edit = data.draw(st.sampled_from(["0", "-", " ", ".5", "1", '"', "}", ""]))
        text = text[:position] + edit + text[position + data.draw(st.integers(0, 1)) :]
    raw = text.encode()
    assert _head_or_error(decoder, raw, data_header) == _decoded_or_error(raw, data_header)
    assert _head_or_error(decoder, raw, data_header) == _decoded_or_error(raw, data_header)
