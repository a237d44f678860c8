"""A fast path for BSREAD main headers in the two layouts cameras send, without JSON.

A main header is a small JSON object whose members are always the same few; per frame
only the numbers change. The layouts senders use:

- std_daq / stddaq encoders: `{"htype":"bsr_m-1.1","pulse_id":N,"global_timestamp":
  {"sec":S,"ns":NS},"hash":"H"[,"dh_compression":"C"]}`
- psi-bsread's Sender (json.dumps of its dict): `{"htype": "bsr_m-1.1",
  ["dh_compression": "C", ]"hash": "H", "pulse_id": N, "global_timestamp": {"sec": S, "ns": NS}}`

with any JSON whitespace between tokens. `match_main_header` recognises exactly these
(numbers in JSON's integer syntax, a hex hash, a known compression) and returns their
values; anything else returns None and goes through the JSON parser, which then accepts
or rejects it with its reason. For every header matched here, the JSON path would return
the same values (integers past the limits return None, so the JSON path reports them).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

_WS: Final = rb"[ \t\n\r]*"
_INT: Final = rb"(0|[1-9][0-9]{0,19})"
_HTYPE: Final = rb'"htype"' + _WS + rb":" + _WS + rb'"bsr_m-1\.1"'
_PULSE: Final = rb'"pulse_id"' + _WS + rb":" + _WS + _INT
_STAMP: Final = (
    rb'"global_timestamp"' + _WS + rb":" + _WS + rb"\{" + _WS + rb'"sec"' + _WS + rb":" + _WS + _INT
    + _WS + rb"," + _WS + rb'"ns"' + _WS + rb":" + _WS + _INT + _WS + rb"\}"
)
_HASH: Final = rb'"hash"' + _WS + rb":" + _WS + rb'"([0-9a-fA-F]{1,128})"'
_COMPRESSION: Final = rb'"dh_compression"' + _WS + rb":" + _WS + rb'"(none|bitshuffle_lz4|lz4)"'


_STD_DAQ: Final = re.compile(
    rb"\{" + _WS + _HTYPE + _WS + rb"," + _WS + _PULSE + _WS + rb"," + _WS + _STAMP + _WS + rb"," + _WS
    + _HASH + rb"(?:" + _WS + rb"," + _WS + _COMPRESSION + rb")?" + _WS + rb"\}"
)
"""Groups: pulse_id, sec, ns, hash, compression (or None)."""
_PSI: Final = re.compile(
    rb"\{" + _WS + _HTYPE + rb"(?:" + _WS + rb"," + _WS + _COMPRESSION + rb")?" + _WS + rb"," + _WS
    + _HASH + _WS + rb"," + _WS + _PULSE + _WS + rb"," + _WS + _STAMP + _WS + rb"\}"
)
"""Groups: compression (or None), hash, pulse_id, sec, ns."""

quick_patterns: Final = (
    (_STD_DAQ.fullmatch, (1, 2, 3, 4, 5)),
    (_PSI.fullmatch, (3, 4, 5, 2, 1)),
)
"""Each layout's fullmatch and the numbers of its groups pulse_id, sec, ns, hash,
compression (for callers that keep the texts as they are)."""

_UINT64_LIMIT: Final = 2**64
_INT64_LIMIT: Final = 2**63


def match_main_header(raw: bytes) -> tuple[int, int, int, str, str] | None:
    """(pulse_id, sec, ns, lower-case hash, dh_compression) of a header in one of the
    known layouts, or None (then parse it as JSON)."""
    match = _STD_DAQ.fullmatch(raw)
    if match is not None:
        pulse, sec, ns, digest, compression = match.groups()
    else:
        match = _PSI.fullmatch(raw)
        if match is None:
            return None
        compression, digest, pulse, sec, ns = match.groups()
    pulse_id, seconds, nanoseconds = int(pulse), int(sec), int(ns)
    if pulse_id >= _UINT64_LIMIT or seconds >= _INT64_LIMIT or nanoseconds >= _INT64_LIMIT:
        return None
    return pulse_id, seconds, nanoseconds, digest.decode().lower(), (compression or b"none").decode()


_PULSE_DIGITS: Final = rb"(0|[1-9][0-9]{0,18})"
"""A pulse id below 2**63 for sure (at most 19 digits), as the per-message path takes it."""
_STAMP_DIGITS: Final = rb"(0|[1-9][0-9]{0,17})"


HeaderMatch = Callable[[bytes], "re.Match[bytes] | None"]


def same_layout(raw: bytes, match: re.Match[bytes], groups: tuple[int, ...]) -> HeaderMatch:
    """The fullmatch of headers that are `raw` (which `match`, from a `quick_patterns`
    pattern with its `groups`, matched) text for text except the pulse id, sec and ns: their
    groups, in that order. Every header it matches, the quick pattern matches too, with the
    same hash and compression text; fewer steps per header than the general pattern."""
    spans = sorted(match.span(group) for group in groups[:3])  # pulse, sec, ns in text order
    pattern = re.escape(raw[: spans[0][0]]) + _PULSE_DIGITS
    pattern += re.escape(raw[spans[0][1] : spans[1][0]]) + _STAMP_DIGITS
    pattern += re.escape(raw[spans[1][1] : spans[2][0]]) + _STAMP_DIGITS + re.escape(raw[spans[2][1] :])
    return re.compile(pattern).fullmatch
