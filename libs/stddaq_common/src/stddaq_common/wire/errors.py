"""The one error every wire decoder raises: WireFormatError, with a reason and a kind.

Decoders of camera and stream messages (BSREAD, array-1.0, compressed values) turn every
malformed input into a WireFormatError, never into another exception, so a service can
catch one type, count it under `kind` and carry on.
"""

from __future__ import annotations

from typing import Final

PARTS: Final = "parts"
"""Wrong number of message parts, or a part that is not a usable buffer."""
JSON: Final = "json"
"""A header part that is not a JSON object."""
HEADER: Final = "header"
"""A header field that is missing, of the wrong type or with an unknown value."""
HASH: Final = "hash"
"""A BSREAD data header whose md5 does not match the main header's hash."""
COMPRESSION: Final = "compression"
"""A compressed value or header that does not decompress (lying lengths, corrupt blocks)."""
SIZE: Final = "size"
"""A value whose size does not match its type x shape, or exceeds the allowed bound."""
MISSING: Final = "missing"
"""A channel value that was sent empty (BSREAD's "missing value")."""

KINDS: Final = (PARTS, JSON, HEADER, HASH, COMPRESSION, SIZE, MISSING)
"""Every kind a WireFormatError can have (stable names, usable as counter labels)."""


class WireFormatError(ValueError):
    """A message that does not follow its wire format; `reason` says what was wrong."""

    def __init__(self, reason: str, kind: str = HEADER) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind

    def __reduce__(self) -> tuple[type[WireFormatError], tuple[str, str]]:
        return (type(self), (self.reason, self.kind))
